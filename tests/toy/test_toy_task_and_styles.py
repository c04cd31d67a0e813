"""Toy task and solution styles: problem ids, rendered arithmetic, style classification, verify."""

import re

import numpy as np
import pytest

from gift_jax.toy import NO_STYLE, STYLES, Problem, TaskSpec, classify_style, render_solution, verify
from gift_jax.toy.styles import render_final, render_work
from gift_jax.toy.task import problem_from_id, problem_id, sample_problem_ids

_STEP = re.compile(r"(\d+)\+(\d+)=(\d+)")


def _random_problems(count, spec=TaskSpec(min_operands=2, max_operands=5, min_operand=0, max_operand=99)):  # noqa: B008
    rng = np.random.default_rng(0)
    return [problem_from_id(spec, int(i)) for i in sample_problem_ids(spec, count, rng)]


def test_problem_ids_round_trip_and_cover_the_space():
    spec = TaskSpec(min_operands=2, max_operands=3, min_operand=1, max_operand=4)
    problems = [problem_from_id(spec, i) for i in range(spec.num_problems)]
    assert spec.num_problems == 4**2 + 4**3
    assert len(set(problems)) == spec.num_problems
    assert [problem_id(spec, p) for p in problems] == list(range(spec.num_problems))
    with pytest.raises(ValueError, match="not in"):
        problem_id(spec, Problem((5, 1)))


def test_sampling_more_problems_than_exist_is_an_error():
    spec = TaskSpec(min_operands=2, max_operands=2, min_operand=0, max_operand=2)
    with pytest.raises(ValueError, match="only 9"):
        sample_problem_ids(spec, 10, np.random.default_rng(0))


def test_prompt_parses_back_and_bad_prompts_are_rejected():
    problem = Problem((7, 15, 8, 3))
    assert problem.prompt == "7+15+8+3=?" and problem.answer == "33"
    assert Problem.from_prompt(problem.prompt) == problem
    for bad in ["7+15", "7=?", "7-1=?", "a+b=?"]:
        with pytest.raises(ValueError, match="not of the form"):
            Problem.from_prompt(bad)


def _parse_work(work):
    """(style, [(a, b, a_plus_b_as_written), ...]) of a rendered work segment."""
    style, body = work[: -len(". ")].split(": ")
    if style == "direct":
        expression, result = body.split("=")
        return style, [(list(map(int, expression.split("+"))), int(result))]
    steps = [_STEP.fullmatch(step).groups() for step in body.split(", ")]
    return style, [([int(a), int(b)], int(c)) for a, b, c in steps]


def test_every_style_writes_correct_arithmetic_ending_in_the_answer():
    for problem in _random_problems(200):
        for style in STYLES:
            work = render_work(problem, style)
            parsed_style, steps = _parse_work(work)
            assert parsed_style == style and work.endswith(f"={problem.answer}. ")
            assert all(sum(terms) == result for terms, result in steps), work
            if style == "direct":
                assert steps[0][0] == list(problem.operands)
            else:
                # n operands need n - 1 two-number additions.
                assert len(steps) == len(problem.operands) - 1, work


def test_styles_take_the_documented_routes():
    problem = Problem((7, 15, 8, 3))
    assert render_work(problem, "left") == "left: 7+15=22, 22+8=30, 30+3=33. "
    assert render_work(problem, "right") == "right: 8+3=11, 15+11=26, 7+26=33. "
    assert render_work(problem, "pairs") == "pairs: 7+15=22, 8+3=11, 22+11=33. "
    assert render_work(problem, "direct") == "direct: 7+15+8+3=33. "
    assert render_work(Problem((1, 2, 3, 4, 5)), "pairs") == "pairs: 1+2=3, 3+4=7, 3+7=10, 10+5=15. "
    with pytest.raises(ValueError, match="unknown style"):
        render_work(problem, "sideways")


def test_verify_accepts_every_style_boxed_and_rejects_wrong_or_unboxed_answers():
    for problem in _random_problems(50):
        wrong = str(int(problem.answer) + 1)
        for style in STYLES:
            boxed = render_solution(problem, style, boxed=True)
            assert verify(problem, boxed) == 1.0
            assert verify(problem.prompt, boxed) == 1.0
            assert verify(problem, render_solution(problem, style, boxed=False)) == 0.0
            assert verify(problem, render_work(problem, style) + render_final(wrong, boxed=True)) == 0.0


def test_verify_reads_the_last_box_only():
    problem = Problem((7, 15, 8, 3))
    assert verify(problem, "\\boxed{30} then \\boxed{33}") == 1.0
    assert verify(problem, "\\boxed{33} then \\boxed{30}") == 0.0
    assert verify(problem, "left: \\boxed{33") == 0.0


def test_classify_style_reads_the_branching_header():
    problem = Problem((7, 15, 8, 3))
    for style in STYLES:
        for boxed in (False, True):
            assert classify_style(render_solution(problem, style, boxed=boxed)) == style
    assert classify_style("\\boxed{33}") == NO_STYLE
    assert classify_style("") == NO_STYLE
    assert classify_style("lef") == NO_STYLE
