"""Agreement of the math reward with labelled answer pairs, side by side with math-verify alone.

    python experiments/bench_rewards.py                      # repo root; the default cases file
    python experiments/bench_rewards.py --cases FILE.jsonl --show-misses

Takes about two minutes on 2 CPU cores. Each line of the cases file is a JSON object with
`response` (a model response; its final `\\boxed{}` answer is graded), `reference` (the ground
truth, bare or boxed), `expected` (1 equivalent, 0 not) and `source` (where the case comes from).
The default file, `experiments/data/reward_agreement_cases.jsonl`, holds the cases of the public
test suites of Math-Verify (huggingface/Math-Verify tests/), NeMo-Skills
(tests/test_math_equal.py) and the MATH dataset's grader (hendrycks/math
modeling/math_equivalence_test.py) that compare a final answer with a reference under default
settings (a bare predicted answer is put in `\\boxed{}`; cases that test finding an answer in
unboxed prose are left out, since the reward reads only boxes), plus adversarial near-miss cases
of this project (`origin` keeps each case's original form).

Graders:
- `math_reward`: `RewardScorer.score` (the batch API the RL stage uses), 2 workers;
- `math-verify`: `verify(parse(gold), parse(response))` with math-verify's default extraction,
  the gold as `$reference$` (or as written when boxed), in this process.

Printed per source and overall: agreement with `expected`, false positives (scored 1, expected
0), false negatives, and seconds per item; then the false positives on the near-miss cases
(numbers that differ slightly from the reference), which must be 0 for the reward.

Measured on 2 busy CPU cores (load about 19) with `--timeout-s 30`, so that no item timed out
(with the default 5 s limit 2-4 items timed out at that load and scored 0):

    source                  items | math_reward agree  FP  FN | math-verify agree  FP  FN
    NeMo-Skills tests          58 |   58 100.0%         0   0 |   55  94.8%         0   3
    gift-jax near-misses       56 |   56 100.0%         0   0 |   45  80.4%         6   5
    hendrycks/math tests       16 |   14  87.5%         2   0 |   14  87.5%         2   0
    Math-Verify tests         201 |  193  96.0%         0   8 |  197  98.0%         0   4
    all                       331 |  321  97.0%         2   8 |  311  94.0%         8  12

On the published suites alone math_reward agrees on 265 of 275 cases, math-verify on 266. The
reward's misses there: answers not in a box, boxes separated by words, labelled roots
(`x_1 = ..., x_2 = ...` against bare values); its 2 false positives are the MATH grader's
ordered reading of `10, 4, -2` (here, as in math-verify, an unordered list of solutions).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path

from gift_jax.rewards import RewardScorer, check_ground_truth

DEFAULT_CASES = Path(__file__).parent / "data" / "reward_agreement_cases.jsonl"
OWN_SOURCE = "gift-jax"


def load_cases(path: Path) -> list[dict]:
    cases = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        case = json.loads(line)
        missing = {"response", "reference", "expected", "source"} - set(case)
        if missing:
            raise ValueError(f"{path}: line {line_number}: missing {sorted(missing)}")
        check_ground_truth(case["reference"], where=f"{path}: line {line_number}")
        cases.append(case)
    return cases


def score_math_reward(cases: list[dict], timeout_s: float) -> tuple[list[int], float]:
    with RewardScorer(num_workers=2, timeout_s=timeout_s) as scorer:
        scorer.score(["\\boxed{x^2}"], ["x \\cdot x"])  # start the workers outside the timing
        start = time.perf_counter()
        scores = scorer.score([c["response"] for c in cases], [c["reference"] for c in cases])
        elapsed = time.perf_counter() - start
    if scores.timed_out or scores.crashed:
        print(
            f"math_reward: {scores.timed_out} items timed out (limit {timeout_s} s), "
            f"{scores.crashed} crashed; they score 0"
        )
    return [int(score) for score in scores.scores], elapsed


def score_math_verify(cases: list[dict]) -> tuple[list[int], float]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verdicts = []
    start = time.perf_counter()
    for case in cases:
        reference = case["reference"]
        gold = reference if "\\boxed" in reference else f"${reference}$"
        try:
            verdicts.append(int(verify(parse(gold), parse(case["response"]))))
        except Exception:  # noqa: BLE001 - a grader that raises has not shown equality
            verdicts.append(0)
    return verdicts, time.perf_counter() - start


def _counts(cases: list[dict], verdicts: list[int]) -> tuple[int, int, int, int]:
    """(items, agreeing, false positives, false negatives)."""
    agree = sum(v == c["expected"] for c, v in zip(cases, verdicts))
    false_pos = sum(v == 1 and c["expected"] == 0 for c, v in zip(cases, verdicts))
    false_neg = sum(v == 0 and c["expected"] == 1 for c, v in zip(cases, verdicts))
    return len(cases), agree, false_pos, false_neg


def _row(name: str, cases: list[dict], ours: list[int], theirs: list[int]) -> str:
    n, agree_a, fp_a, fn_a = _counts(cases, ours)
    _, agree_b, fp_b, fn_b = _counts(cases, theirs)
    return (
        f"{name:36s} {n:5d} | {agree_a:4d} {agree_a / n:6.1%} {fp_a:4d} {fn_a:4d} | "
        f"{agree_b:4d} {agree_b / n:6.1%} {fp_b:4d} {fn_b:4d}"
    )


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    arguments.add_argument(
        "--timeout-s", type=float, default=5.0, help="math_reward's time limit per item (the RewardScorer default)"
    )
    arguments.add_argument(
        "--show-misses", action="store_true", help="print every case on which a grader disagrees with `expected`"
    )
    options = arguments.parse_args()
    cases = load_cases(options.cases)
    ours, ours_s = score_math_reward(cases, options.timeout_s)
    theirs, theirs_s = score_math_verify(cases)

    print(f"{len(cases)} cases from {options.cases}")
    print(
        f"{'source':36s} {'items':>5s} | {'math_reward: agree':>18s}   FP   FN | {'math-verify: agree':>18s}   FP   FN"
    )
    by_source = collections.defaultdict(list)
    for index, case in enumerate(cases):
        by_source[case["source"].split(":")[0]].append(index)
    for source, indices in sorted(by_source.items()):
        subset = [cases[i] for i in indices]
        print(_row(source, subset, [ours[i] for i in indices], [theirs[i] for i in indices]))
    published = [i for i, c in enumerate(cases) if not c["source"].startswith(OWN_SOURCE)]
    print(
        _row(
            "published suites (all but gift-jax)",
            [cases[i] for i in published],
            [ours[i] for i in published],
            [theirs[i] for i in published],
        )
    )
    print(_row("all", cases, ours, theirs))
    near_miss = [i for i, c in enumerate(cases) if c["source"].startswith(OWN_SOURCE) and c["expected"] == 0]
    print(
        f"near-miss cases (expected 0): {len(near_miss)}; false positives: math_reward "
        f"{sum(ours[i] for i in near_miss)}, math-verify {sum(theirs[i] for i in near_miss)}"
    )
    print(
        f"seconds per item: math_reward {ours_s / len(cases):.4f} (batch, 2 workers), "
        f"math-verify {theirs_s / len(cases):.4f} (in process); "
        f"ratio {ours_s / max(theirs_s, 1e-9):.2f}x"
    )
    if options.show_misses:
        for index, case in enumerate(cases):
            if ours[index] != case["expected"] or theirs[index] != case["expected"]:
                print(
                    f"expected {case['expected']} math_reward {ours[index]} math-verify "
                    f"{theirs[index]}  {case['response'][-80:]!r} vs {case['reference'][:60]!r}"
                    f"  [{case['source']}]"
                )


if __name__ == "__main__":
    main()
