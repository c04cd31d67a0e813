"""Reading local evaluation benchmarks (jsonl / json / parquet) into `BenchmarkProblem` records.

Nothing is downloaded: point `load_benchmark` at a file exported from the usual sources (or describe
it with a `BenchmarkSpec`: name, file, instruction appended to each problem). The
common layouts are recognised from the first record's keys (case-insensitive):

- gpqa (GPQA): `Question`, `Correct Answer`, `Incorrect Answer 1..3`.
- options (MMLU-Pro): `question`, `options` list, `answer_index` or `answer` (letter).
- choices (MMLU, MMLU-Redux, ARC): `question`, `choices` as a list or ARC's
  `{"text": [...], "label": [...]}`, `answerKey` or `answer` (label, letter or 0-based index).
- final_answer (OlympiadBench): `question`, `final_answer` (a string or a list, joined by ", ").
- gsm8k (GSM8K): `question`, `answer` whose text after the last `####` is the answer.
- answer (MATH500, AIME 2024 / 2025): `problem` or `question`, `answer` (text or number).
- boxed (MATH with worked solutions only): `problem`, the last `\\boxed{}` of `solution`.

Multiple-choice options are lettered A, B, ... and the answer is the letter. GPQA's options are
shuffled with a permutation derived from the question text and `shuffle_seed`, so the order is
the same on every machine and run. Other layouts go through `problem_field` / `answer_field`
(and `choices_field` for multiple choice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq

from gift_jax.data.prompt_format import DEFAULT_INSTRUCTION, PromptFormat
from gift_jax.data.records import DataFormatError
from gift_jax.rewards.ground_truth import check_ground_truth

ProblemKind = Literal["math", "multiple_choice"]

# Qwen's standard math instruction (the project's default prompt, `gift_jax.data.prompt_format`); the reward
# reads the last \boxed{} of the response.
DEFAULT_MATH_INSTRUCTION = DEFAULT_INSTRUCTION
# The multiple-choice reward takes the last standalone option letter of the response.
DEFAULT_CHOICE_INSTRUCTION = (
    "Think step by step, then finish your response with the letter of the correct option ({first}-{last}) on its own."
)
LETTERS = string.ascii_uppercase
GPQA_INCORRECT_KEYS = ("incorrect answer 1", "incorrect answer 2", "incorrect answer 3")
_BOXED_OPEN = "\\boxed{"
# `BenchmarkSpec.instruction` values with a meaning of their own.
CHECKPOINT_INSTRUCTIONS = "checkpoint"  # math: the evaluated checkpoint's instruction; multiple choice: the letter one
PAPER_INSTRUCTIONS = "paper"  # DEFAULT_MATH_INSTRUCTION / DEFAULT_CHOICE_INSTRUCTION, by problem kind
NO_INSTRUCTION = "none"  # the problem text alone (the toy world's prompts)
_SPEC_OPTION = ":instruction="


@dataclasses.dataclass(frozen=True)
class BenchmarkProblem:
    """One evaluation problem.

    prompt: the user message (question, lettered options if any, instruction).
    answer: ground truth; for multiple choice the correct option's letter.
    kind: "math" (checked by the math reward) or "multiple_choice" (checked by letter).
    meta: benchmark name, source file, row, layout; for multiple choice `options` and
      `answer_index`; `fields` holds the record's other scalar fields (ids, subject, level, ...).
    """

    prompt: str
    answer: str
    kind: ProblemKind
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Fields:
    """Which keys of a record hold what, for one layout."""

    layout: str
    question: str
    answer: str
    choices: str | None = None


def read_benchmark_records(path: str | Path) -> list[dict]:
    """All records of a `.jsonl`, `.json` (a list of objects) or `.parquet` file, any fields.

    Unlike `gift_jax.data.read_records` (named string columns of training data), values keep their
    JSON / parquet types: benchmarks hold numbers, lists and mappings. Bad files raise
    `DataFormatError` naming the file and the line or row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    if path.suffix == ".parquet":
        records = pq.read_table(path).to_pylist()
    elif path.suffix == ".jsonl":
        records = []
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path} line {line_number}: invalid JSON ({err})") from err
    elif path.suffix == ".json":
        records = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise DataFormatError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    else:
        raise DataFormatError(
            f"{path}: unsupported benchmark format {path.suffix!r} (expected .jsonl, .json or .parquet)"
        )
    if not records:
        raise DataFormatError(f"{path} holds no records")
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataFormatError(f"{path} row {row}: expected an object, got {type(record).__name__}")
    return records


def _detect_fields(record: Mapping) -> _Fields | None:
    """The known layout that `record`'s keys match, or None."""
    key_of = {key.lower(): key for key in record}
    if all(key in key_of for key in ("question", "correct answer", *GPQA_INCORRECT_KEYS)):
        return _Fields("gpqa", key_of["question"], key_of["correct answer"])
    question = key_of.get("problem") or key_of.get("question")
    if question is None:
        return None
    if "options" in key_of and (answer := key_of.get("answer_index") or key_of.get("answer")):
        return _Fields("options", question, answer, key_of["options"])
    if "choices" in key_of and (answer := key_of.get("answerkey") or key_of.get("answer")):
        return _Fields("choices", question, answer, key_of["choices"])
    if "final_answer" in key_of:
        return _Fields("final_answer", question, key_of["final_answer"])
    if "answer" in key_of:
        is_gsm8k = "####" in str(record[key_of["answer"]])
        return _Fields("gsm8k" if is_gsm8k else "answer", question, key_of["answer"])
    if "solution" in key_of:
        return _Fields("boxed", question, key_of["solution"])
    return None


def _text(value, what: str) -> str:
    """A non-empty stripped string from a string or number field."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} is {value!r}, expected text")
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is {value!r}, expected non-empty text")
    return value.strip()


def _math_answer(value) -> str:
    """Ground truth from a plain field: text or number, `$...$` removed; lists joined by ", "."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("answer is an empty list")
        return ", ".join(_math_answer(item) for item in value)
    text = _text(value, "answer")
    if len(text) > 1 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def _gsm8k_answer(solution) -> str:
    """GSM8K's final number: the text after the last `####`, thousands separators removed."""
    text = _text(solution, "answer")
    if "####" not in text:
        raise ValueError("GSM8K answer has no '#### <number>' line")
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def _boxed_answer(solution) -> str:
    """Content of the last `\\boxed{...}` of a worked solution, braces matched."""
    text = _text(solution, "solution")
    start = text.rfind(_BOXED_OPEN)
    if start >= 0:
        depth, begin = 1, start + len(_BOXED_OPEN)
        for i in range(begin, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[begin:i].strip()
    raise ValueError("solution has no complete \\boxed{...}")


def _options_and_labels(value) -> tuple[list[str], list[str] | None]:
    """Options from a list, or from ARC's `{"text": [...], "label": [...]}` (labels returned)."""
    labels = None
    if isinstance(value, Mapping):
        if "text" not in value:
            raise ValueError(f"choices mapping needs a 'text' list, has keys {sorted(value)}")
        labels = [_text(label, "choice label") for label in value.get("label") or []] or None
        value = value["text"]
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise ValueError(f"options must be a list of at least 2, got {value!r}")
    if len(value) > len(LETTERS):
        raise ValueError(f"{len(value)} options is more than the {len(LETTERS)} letters")
    options = [_text(option, "option") for option in value]
    if labels is not None and len(labels) != len(options):
        raise ValueError(f"{len(labels)} choice labels for {len(options)} options")
    return options, labels


def _choice_index(answer, num_options: int, labels: list[str] | None) -> int:
    """0-based index of the correct option from an index, a letter or one of `labels`."""
    if labels is not None and isinstance(answer, str) and answer.strip() in labels:
        index = labels.index(answer.strip())
    elif isinstance(answer, Integral) and not isinstance(answer, bool):
        index = int(answer)
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha():
        index = LETTERS.index(answer.strip().upper())
    else:
        raise ValueError(
            f"cannot read answer {answer!r} as an option letter or index"
            + (f" or one of the labels {labels}" if labels else "")
        )
    if not 0 <= index < num_options:
        raise ValueError(f"answer {answer!r} points outside the {num_options} options")
    return index


def _gpqa_options(record: Mapping, fields: _Fields, shuffle_seed: int) -> tuple[list[str], int]:
    """GPQA's four answers in a deterministic per-question order, and the correct one's index."""
    key_of = {key.lower(): key for key in record}
    answers = [_text(record[fields.answer], "Correct Answer")]
    answers += [_text(record[key_of[key]], key) for key in GPQA_INCORRECT_KEYS]
    question = _text(record[fields.question], "question")
    digest = hashlib.sha256(f"{shuffle_seed}\n{question}".encode()).digest()
    order = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(len(answers))
    return [answers[i] for i in order], int(np.flatnonzero(order == 0)[0])


def format_multiple_choice(question: str, options: list[str], instruction: str = DEFAULT_CHOICE_INSTRUCTION) -> str:
    """Question, lettered options ("A. ..."), then `instruction` ({first}/{last}: the letters)."""
    lines = [question, ""] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    if instruction:
        lines += ["", instruction.format(first=LETTERS[0], last=LETTERS[len(options) - 1])]
    return "\n".join(lines)


def format_math(question: str, instruction: str | None = DEFAULT_MATH_INSTRUCTION) -> str:
    """Question followed by `instruction` (omitted when empty): the user turn every stage builds
    (`PromptFormat.user_message`)."""
    return PromptFormat(instruction=instruction or None).user_message(question)


def _scalar_fields(record: Mapping, used: set[str]) -> dict:
    """The record's other scalar fields (ids, subject, level, unit, ...), for `BenchmarkProblem.meta`."""
    return {
        key: value
        for key, value in record.items()
        if key not in used and (value is None or isinstance(value, (str, int, float, bool)))
    }


def _to_problem(
    record: Mapping,
    fields: _Fields,
    *,
    shuffle_seed: int,
    math_instruction: str | None,
    choice_instruction: str,
    meta: dict,
) -> BenchmarkProblem:
    """One record -> BenchmarkProblem, following `fields.layout`."""
    question = _text(record[fields.question], f"question field {fields.question!r}")
    used = {fields.question, fields.answer, fields.choices}
    if fields.layout == "gpqa":
        options, answer_index = _gpqa_options(record, fields, shuffle_seed)
        used |= {key for key in record if key.lower() in GPQA_INCORRECT_KEYS}
    elif fields.choices is not None:
        options, labels = _options_and_labels(record[fields.choices])
        answer_index = _choice_index(record[fields.answer], len(options), labels)
    else:
        parse = {"gsm8k": _gsm8k_answer, "boxed": _boxed_answer}.get(fields.layout, _math_answer)
        meta["fields"] = _scalar_fields(record, used)
        return BenchmarkProblem(format_math(question, math_instruction), parse(record[fields.answer]), "math", meta)
    meta.update(options=options, answer_index=answer_index, fields=_scalar_fields(record, used))
    return BenchmarkProblem(
        format_multiple_choice(question, options, choice_instruction), LETTERS[answer_index], "multiple_choice", meta
    )


def load_benchmark(
    path: str | Path,
    *,
    name: str | None = None,
    problem_field: str | None = None,
    answer_field: str | None = None,
    choices_field: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    shuffle_seed: int = 0,
    math_instruction: str | None = DEFAULT_MATH_INSTRUCTION,
    choice_instruction: str = DEFAULT_CHOICE_INSTRUCTION,
) -> list[BenchmarkProblem]:
    """Reads a benchmark file into `BenchmarkProblem`s (see the module docstring for the layouts).

    Args:
      path: a `.jsonl`, `.json` or `.parquet` file.
      name: benchmark name stored in `meta["benchmark"]` (default: the file name without suffix).
      problem_field, answer_field: explicit keys, for layouts not recognised automatically; give
        both. With `choices_field` too the problems are multiple choice (answer: index, letter or
        label), otherwise math (answer: text, number or list).
      offset, limit: take records `[offset, offset + limit)` in file order.
      shuffle_seed: seeds GPQA's option order.
      math_instruction, choice_instruction: appended to the prompts (`None` / "" to leave out).
    Returns:
      The problems; `meta["row"]` is the record's 0-based index in the file.
    """
    path = Path(path)
    if (problem_field is None) != (answer_field is None):
        raise ValueError(f"{path}: give both problem_field and answer_field, or neither")
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"{path}: offset and limit must be >= 0, got {offset}, {limit}")
    records = read_benchmark_records(path)
    if problem_field is not None:
        fields = _Fields("custom", problem_field, answer_field, choices_field)
    else:
        fields = _detect_fields(records[0])
        if fields is None:
            raise ValueError(
                f"{path}: unknown benchmark layout; its records have keys {sorted(records[0])}. Rename the "
                f"question key to 'problem' (or 'question') and the answer key to 'answer' (a number or text; "
                f"'final_answer' and a 'solution' ending in \\boxed{{}} also work); multiple choice: 'question' "
                f"with an 'options' list and 'answer' (letter or index). From Python, "
                f"load_benchmark(problem_field=..., answer_field=..., choices_field=...) reads any keys."
            )
    stop = None if limit is None else offset + limit
    problems = []
    for row, record in list(enumerate(records))[offset:stop]:
        missing = [
            key for key in (fields.question, fields.answer, fields.choices) if key is not None and key not in record
        ]
        if missing:
            raise ValueError(f"{path} row {row}: missing {missing}; it has keys {sorted(record)}")
        meta = {"benchmark": name or path.stem, "source": str(path), "row": row, "layout": fields.layout}
        try:
            problem = _to_problem(
                record,
                fields,
                shuffle_seed=shuffle_seed,
                math_instruction=math_instruction,
                choice_instruction=choice_instruction,
                meta=meta,
            )
            if problem.kind == "math":  # scorable by the reward, checked before any run
                check_ground_truth(problem.answer, where="ground truth")
            problems.append(problem)
        except (ValueError, KeyError) as err:
            raise ValueError(f"{path} row {row} ({fields.layout} layout): {err}") from err
    return problems


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark to evaluate: a name, a file and the instruction appended to every problem.

    instruction: `CHECKPOINT_INSTRUCTIONS` ("checkpoint", the default) appends, to math problems, the
      instruction the evaluated checkpoint was trained with (its run's `model.prompt`; the caller passes
      it to `load`) and to multiple choice the option-letter sentence; `PAPER_INSTRUCTIONS` ("paper")
      the paper's protocol sentence by problem kind (`DEFAULT_MATH_INSTRUCTION`,
      `DEFAULT_CHOICE_INSTRUCTION`); `NO_INSTRUCTION` ("none") or None leaves the problem text alone
      (the toy world, whose tokenizer knows no English); any other text is appended as given (for
      multiple choice `{first}` / `{last}` become the first and last option letters).
    limit: the first `limit` problems of the file (None: all).
    """

    name: str
    path: Path
    instruction: str | None = CHECKPOINT_INSTRUCTIONS
    limit: int | None = None

    @classmethod
    def parse(cls, text: str, *, limit: int | None = None) -> BenchmarkSpec:
        """`NAME=PATH[:instruction=TEXT]` -> spec (TEXT: "checkpoint", "paper", "none" or the sentence itself).

        Everything after the first `:instruction=` is the instruction, so it may hold any character.
        """
        head, has_option, instruction = text.partition(_SPEC_OPTION)
        name, sep, path = head.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=PATH[{_SPEC_OPTION}TEXT], got {text!r}")
        if has_option and not instruction:
            raise ValueError(f"{text!r}: empty instruction; write {_SPEC_OPTION}{NO_INSTRUCTION} for none")
        return cls(name, Path(path), instruction if has_option else CHECKPOINT_INSTRUCTIONS, limit)

    def instructions(self, checkpoint_instruction: str | None = DEFAULT_INSTRUCTION) -> tuple[str | None, str]:
        """(math instruction, multiple-choice instruction) for `load_benchmark`; `checkpoint_instruction`:
        the instruction the evaluated checkpoint was trained with."""
        if self.instruction == CHECKPOINT_INSTRUCTIONS:
            return checkpoint_instruction, DEFAULT_CHOICE_INSTRUCTION
        if self.instruction == PAPER_INSTRUCTIONS:
            return DEFAULT_MATH_INSTRUCTION, DEFAULT_CHOICE_INSTRUCTION
        if self.instruction is None or self.instruction == NO_INSTRUCTION:
            return None, ""
        return self.instruction, self.instruction

    def load(self, checkpoint_instruction: str | None = DEFAULT_INSTRUCTION) -> list[BenchmarkProblem]:
        """The problems, their prompts ending in this spec's instruction (`meta["instruction"]`: the spec's
        setting, `meta["math_instruction"]`: the text math problems got)."""
        math_instruction, choice_instruction = self.instructions(checkpoint_instruction)
        problems = load_benchmark(
            self.path,
            name=self.name,
            limit=self.limit,
            math_instruction=math_instruction,
            choice_instruction=choice_instruction,
        )
        for problem in problems:
            problem.meta["instruction"] = self.instruction
            problem.meta["math_instruction"] = math_instruction
        return problems


def parse_benchmark_specs(items: Sequence[str], *, limit: int | None = None) -> list[BenchmarkSpec]:
    """Command-line `["NAME=PATH[:instruction=TEXT]", ...]` -> specs (ValueError for a malformed or repeated name)."""
    specs = [BenchmarkSpec.parse(item, limit=limit) for item in items]
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"benchmark name(s) {repeated} given twice")
    return specs
