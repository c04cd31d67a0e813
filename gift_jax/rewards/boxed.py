"""Extract the final answer of a response: the content of its last `\\boxed{...}`.

Follows the official MATH / verl utilities: the last `\\boxed` (or `\\fbox`) command wins, its
argument is found by brace matching, and the `\\boxed x` form (a space instead of a brace) runs to
the next `$` or the end of the line. A last box that is never closed (a truncated response) counts
as no answer rather than falling back to an earlier box: an earlier box is usually a sub-result.

`final_boxed_answers` also collects the boxes just before the last one when only separators stand
between them (`\\boxed{1}, \\boxed{2}`, `\\boxed{(2, 2)} and \\boxed{(6, 2)}`): an answer
split over several boxes.

Everything here is linear in the length of the text, so it is safe on megabyte-long or deeply
nested adversarial responses.
"""

import re

# A command name followed by a letter (say `\\boxedanswer`) is another macro, and one followed by
# neither `{` nor whitespace is a mention of the name, not a box.
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?=[{\s])")
_BRACE = re.compile(r"[{}]")
_SPACE_FORM_END = re.compile(r"[$\n]")


# At most this many boxes make one final answer; more are a list of sub-results.
MAX_FINAL_BOXES = 16
# What may stand between the boxes of one split answer: punctuation, math delimiters, spacing, "and".
_BOX_SEPARATORS = re.compile(
    r"(?:\s|[,;&]|\$|\\\]|\\\[|\\\(|\\\)|\\q?quad|\\[,;:! ]|\band\b"
    r"|\\text\{\s*(?:(?:and|,)\s*)?\})*"
)
# Separators are short; a longer gap between two boxes is text, and is not scanned.
_MAX_SEPARATOR_CHARS = 200


def _last_box_command(text: str, end: int | None = None) -> re.Match | None:
    """The last `\\boxed` / `\\fbox` command starting before `end` (default: anywhere), or None."""
    last = None
    for last in _BOX_COMMAND.finditer(text, 0, len(text) if end is None else end):  # noqa: B007  (keeps the last)
        pass
    return last


def _last_box_command_end(text: str) -> int | None:
    """Index just after the last `\\boxed` / `\\fbox` command in `text`, or None."""
    last = _last_box_command(text)
    return None if last is None else last.end()


def _braced_argument(text: str, open_index: int) -> str | None:
    """Content between the `{` at `open_index` and its matching `}`; None if never closed.

    Braces are counted as they appear, escaped or not, as the official utilities do: `\\{` and
    `\\}` come in pairs in well-formed answers such as `\\{1, 2\\}`.
    """
    depth = 0
    for match in _BRACE.finditer(text, open_index):
        depth += 1 if match.group() == "{" else -1
        if depth == 0:
            return text[open_index + 1 : match.start()]
    return None


def _box_argument(text: str, argument_start: int) -> tuple[str, int] | None:
    """(stripped argument, index just after it) of the box command ending at `argument_start`."""
    while argument_start < len(text) and text[argument_start].isspace():
        argument_start += 1
    if text.startswith("{", argument_start):
        content = _braced_argument(text, argument_start)
        if content is None:
            return None
        return content.strip(), argument_start + len(content) + 2
    # `\boxed 5$` form: the argument runs to the closing `$` or the end of the line.
    form_end = _SPACE_FORM_END.search(text, argument_start)
    end = form_end.start() if form_end else len(text)
    return text[argument_start:end].strip(), end


def last_boxed_answer(text: str) -> str | None:
    """The stripped content of the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed x` in `text`.

    Returns None when there is no box or the last box is never closed. An empty box gives "".
    """
    argument_start = _last_box_command_end(text)
    if argument_start is None:
        return None
    argument = _box_argument(text, argument_start)
    return None if argument is None else argument[0]


def _only_separators(text: str) -> bool:
    return len(text) <= _MAX_SEPARATOR_CHARS and _BOX_SEPARATORS.fullmatch(text) is not None


def _box_command_before(text: str, end: int) -> re.Match | None:
    """The box command whose name starts last before `end`, or None."""
    start = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
    return None if start < 0 else _BOX_COMMAND.match(text, start)


def final_boxed_answers(text: str) -> list[str] | None:
    """The final answer's boxes, in order: the last box and the boxes right before it.

    A box belongs to the final answer when only separators (`_BOX_SEPARATORS`: commas, `and`,
    `$`, spacing) stand between it and the next one. Repeats of one answer (`\\boxed{5} \\boxed{5}`)
    count once, and a run of more than `MAX_FINAL_BOXES` boxes is not one answer: only its last
    box counts. Returns None when there is no box or the last box is never closed, like
    `last_boxed_answer`. Each step scans one box, so this stays linear in `text`.
    """
    last = _last_box_command(text)
    if last is None:
        return None
    argument = _box_argument(text, last.end())
    if argument is None:
        return None
    answers = [argument[0]]
    start = last.start()
    while True:
        previous = _box_command_before(text, start)
        if previous is None:
            break
        argument = _box_argument(text, previous.end())
        if argument is None or argument[1] > start or not _only_separators(text[argument[1] : start]):
            break
        if len(answers) == MAX_FINAL_BOXES:
            return answers[:1]
        answers.append(argument[0])
        start = previous.start()
    answers.reverse()
    if len(set(answers)) == 1:
        return answers[-1:]
    return answers
