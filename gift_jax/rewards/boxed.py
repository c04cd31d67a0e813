"""Extract the final answer of a response: the content of its last `\\boxed{...}`.

Follows the official MATH / verl utilities: the last `\\boxed` (or `\\fbox`) command wins, its
argument is found by brace matching, and the `\\boxed x` form (a space instead of a brace) runs to
the next `$` or the end of the line. A last box that is never closed (a truncated response) counts
as no answer rather than falling back to an earlier box: an earlier box is usually a sub-result.

Everything here is linear in the length of the text, so it is safe on megabyte-long or deeply
nested adversarial responses.
"""
import re

# A command name followed by a letter (say `\\boxedanswer`) is another macro, and one followed by
# neither `{` nor whitespace is a mention of the name, not a box.
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?=[{\s])")
_BRACE = re.compile(r"[{}]")
_SPACE_FORM_END = re.compile(r"[$\n]")


def _last_box_command_end(text: str) -> int | None:
    """Index just after the last `\\boxed` / `\\fbox` command in `text`, or None."""
    last = None
    for last in _BOX_COMMAND.finditer(text):
        pass
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


def last_boxed_answer(text: str) -> str | None:
    """The stripped content of the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed x` in `text`.

    Returns None when there is no box or the last box is never closed. An empty box gives "".
    """
    argument_start = _last_box_command_end(text)
    if argument_start is None:
        return None
    while argument_start < len(text) and text[argument_start].isspace():
        argument_start += 1
    if text.startswith("{", argument_start):
        content = _braced_argument(text, argument_start)
        return None if content is None else content.strip()
    # `\boxed 5$` form: the argument runs to the closing `$` or the end of the line.
    form_end = _SPACE_FORM_END.search(text, argument_start)
    return text[argument_start : form_end.start() if form_end else len(text)].strip()
