"""The `tradeoff` world: its generator (splits, base corpus, expert) and its shipped base's branching
probabilities, the numbers gift_jax/toy/README.md's predictions are computed from."""

import json
from pathlib import Path

import numpy as np
import pytest

from gift_jax.data import load_tokenizer
from gift_jax.models import load_hf
from gift_jax.toy import STYLES, Problem, classify_style, parse_conversation, verify, write_world
from gift_jax.toy.base_pretraining import CONTINUED_FROM, WORLD_SEED, world_record
from gift_jax.toy.branch_probabilities import boxed_probability_after, header_probabilities
from gift_jax.toy.corpus import SplitSizes, split_problems
from gift_jax.toy.task import TaskSpec

SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "toy_base_tradeoff"
SIZES = {"pretrain": 40_000, "expert": 64, "expert_val": 16, "rl_prompts": 64, "eval": 64}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("tradeoff"), variant="tradeoff", seed=WORLD_SEED, sizes=SIZES)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_splits_are_disjoint_and_the_same_problems_as_the_hard_world(world, tmp_path):
    hard = write_world(tmp_path / "hard", variant="hard", seed=WORLD_SEED, sizes=SIZES)
    prompts = {
        "expert": [r["sft_prompt"] for r in _rows(world["expert"])],
        "rl_prompts": [r["prompt"] for r in _rows(world["rl_prompts"])],
        "eval": [r["problem"] for r in _rows(world["eval"])],
        "pretrain": [parse_conversation(r["text"])[0] for r in _rows(world["pretrain"])],
    }
    seen = set()
    for split, items in prompts.items():
        assert len(set(items)) == len(items), split
        assert not set(items) & seen, split
        seen |= set(items)
    assert prompts["eval"] == [r["problem"] for r in _rows(hard["eval"])]


def test_base_corpus_never_skips_the_steps_and_boxes_one_document_in_a_thousand(world):
    responses = [parse_conversation(r["text"])[1] for r in _rows(world["pretrain"])]
    shares = {s: np.mean([classify_style(r) == s for r in responses]) for s in STYLES}
    assert shares["direct"] == 0.0
    assert all(abs(shares[s] - 1 / 3) < 1e-3 for s in ("left", "right", "pairs"))
    assert sum("\\boxed{" in r for r in responses) == 40


def test_expert_skips_the_steps_and_boxes_every_answer_and_rl_prompts_carry_it(world):
    for split, key in (("expert", "sft_prompt"), ("rl_prompts", "prompt")):
        for row in _rows(world[split]):
            assert classify_style(row["solution"]) == "direct"
            assert verify(Problem.from_prompt(row[key]), row["solution"]) == 1.0


def test_shipped_base_matches_the_world_record(world):
    manifest = json.loads(world["manifest"].read_text())
    record = json.loads((SHIPPED / "world.json").read_text())
    assert record == world_record({**manifest, "sizes": {**manifest["sizes"], "pretrain": 40_000}})
    assert record["continued_from"]["steps"] == CONTINUED_FROM["tradeoff"][1]


@pytest.fixture(scope="module")
def shipped_base():
    model, _ = load_hf(SHIPPED)
    problems = split_problems(TaskSpec(), SplitSizes(), WORLD_SEED)["eval"][:64]
    return model, load_tokenizer(SHIPPED), problems


def test_shipped_base_branches_as_documented(shipped_base):
    """The ranges stated in gift_jax/toy/README.md (tradeoff world, measured on 256 eval problems)."""
    model, tokenizer, problems = shipped_base
    header = header_probabilities(model, tokenizer, problems)
    assert all(0.25 < header[s] < 0.42 for s in ("left", "right", "pairs")), header
    assert 1e-7 < header["direct"] < 3e-6, header
    for style in STYLES:
        assert 5e-5 < boxed_probability_after(model, tokenizer, problems, style) < 5e-4, style
