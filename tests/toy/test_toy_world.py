"""write_world: disjoint deterministic splits, expert vs base corpus properties, lengths, errors."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from gift_jax.toy import (
    EXPERT_STYLE,
    STYLES,
    VOCAB,
    BaseMix,
    Problem,
    TaskSpec,
    classify_style,
    parse_conversation,
    verify,
    write_world,
)
from gift_jax.toy.corpus import exact_share_labels
from gift_jax.toy.tokenizer import MODEL_MAX_LENGTH, build_tokenizer

SIZES = {"pretrain": 2000, "expert": 200, "expert_val": 50, "rl_prompts": 200, "eval": 100}
SPLIT_FILES = ("pretrain", "expert", "expert_val", "rl_prompts", "eval")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_worlds")
    return {
        (variant, seed, copy): write_world(root / f"{variant}_{seed}_{copy}", variant=variant, seed=seed, sizes=SIZES)
        for variant, seed, copy in [("hard", 0, 0), ("hard", 0, 1), ("hard", 1, 0), ("control", 0, 0)]
    }


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _prompts(paths, split):
    rows = _rows(paths[split])
    if split == "pretrain":
        return [parse_conversation(row["text"])[0] for row in rows]
    key = {"expert": "sft_prompt", "expert_val": "sft_prompt", "rl_prompts": "prompt", "eval": "problem"}[split]
    return [row[key] for row in rows]


def test_files_exist_with_the_official_columns(worlds):
    paths = worlds["hard", 0, 0]
    expected_keys = {
        "pretrain": ["text"],
        "expert": ["sft_prompt", "solution"],
        "expert_val": ["sft_prompt", "solution"],
        "rl_prompts": ["prompt", "answer", "solution"],
        "eval": ["problem", "answer"],
    }
    for split, keys in expected_keys.items():
        rows = _rows(paths[split])
        assert len(rows) == SIZES[split]
        assert all(list(row) == keys for row in rows), split
    assert (paths["tokenizer"] / "tokenizer.json").is_file()
    assert pq.read_table(paths["expert_parquet"]).to_pylist() == _rows(paths["expert"])


def test_splits_are_disjoint_by_problem_and_have_no_duplicates(worlds):
    paths = worlds["hard", 0, 0]
    seen = set()
    for split in SPLIT_FILES:
        problems = {Problem.from_prompt(p) for p in _prompts(paths, split)}
        assert len(problems) == SIZES[split], f"duplicate problems inside {split}"
        assert not problems & seen, f"{split} shares problems with an earlier split"
        seen |= problems


def test_same_seed_same_bytes_other_seed_other_problems(worlds):
    first, again, other = worlds["hard", 0, 0], worlds["hard", 0, 1], worlds["hard", 1, 0]
    for name in (*SPLIT_FILES, "expert_parquet", "manifest"):
        assert first[name].read_bytes() == again[name].read_bytes(), name
    for split in SPLIT_FILES:
        assert set(_prompts(first, split)) != set(_prompts(other, split)), split


def test_variants_share_everything_but_the_expert_style(worlds):
    hard, control = worlds["hard", 0, 0], worlds["control", 0, 0]
    for split in ("pretrain", "eval"):
        assert hard[split].read_bytes() == control[split].read_bytes(), split
    questions = lambda paths: [(r["prompt"], r["answer"]) for r in _rows(paths["rl_prompts"])]
    assert questions(hard) == questions(control)
    for split in ("expert", "expert_val", "rl_prompts"):
        assert _prompts(hard, split) == _prompts(control, split)
        assert _rows(hard[split]) != _rows(control[split])


@pytest.mark.parametrize("variant", ["hard", "control"])
def test_expert_shows_one_style_always_boxed_and_correct(worlds, variant):
    paths = worlds[variant, 0, 0]
    for split in ("expert", "expert_val", "rl_prompts"):
        for row in _rows(paths[split]):
            problem = Problem.from_prompt(row["sft_prompt" if split != "rl_prompts" else "prompt"])
            assert classify_style(row["solution"]) == EXPERT_STYLE[variant]
            assert row["solution"].endswith(f"\\boxed{{{problem.answer}}}")
            assert verify(problem, row["solution"]) == 1.0
    assert EXPERT_STYLE[variant] == json.loads(paths["manifest"].read_text())["expert_style"]


def test_base_corpus_mixes_styles_and_rarely_boxes(worlds):
    rows = _rows(worlds["hard", 0, 0]["pretrain"])
    responses = [parse_conversation(row["text"])[1] for row in rows]
    shares = {s: np.mean([classify_style(r) == s for r in responses]) for s in STYLES}
    assert all(0.1 <= share <= 0.5 for share in shares.values()), shares
    boxed = np.array(["\\boxed{" in r for r in responses])
    assert 0.01 <= boxed.mean() <= 0.03
    for row, response, is_boxed in zip(rows, responses, boxed):
        problem = Problem.from_prompt(parse_conversation(row["text"])[0])
        assert verify(problem, response) == float(is_boxed)
        assert is_boxed or response.endswith(f"answer: {problem.answer}")
    # The format is drawn independently of the style, so every style has boxed documents.
    assert {classify_style(r) for r, b in zip(responses, boxed) if b} == set(STYLES)
    stats = json.loads(worlds["hard", 0, 0]["manifest"].read_text())["base_corpus"]
    assert stats["style_shares"] == {**shares, "none": 0.0}
    assert stats["boxed_fraction"] == boxed.mean()


def test_every_sequence_fits_the_length_limit(worlds):
    paths = worlds["hard", 0, 0]
    manifest = json.loads(paths["manifest"].read_text())
    tokenizer = build_tokenizer()
    documents = [row["text"] for row in _rows(paths["pretrain"])]
    longest = max(len(e.ids) for e in tokenizer.encode_batch(documents, add_special_tokens=False))
    assert longest <= manifest["worst_case"]["sequence_tokens"] <= MODEL_MAX_LENGTH
    assert manifest["vocab_size"] == len(VOCAB)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown toy-world variant 'easy'"):
        write_world(tmp_path, variant="easy")
    with pytest.raises(ValueError, match=r"unknown split name\(s\) \['train'\]"):
        write_world(tmp_path, sizes={"train": 10})
    with pytest.raises(ValueError, match="SplitSizes.eval must be a positive int"):
        write_world(tmp_path, sizes={"eval": 0})
    with pytest.raises(ValueError, match="has only 16"):
        write_world(tmp_path, task=TaskSpec(min_operands=2, max_operands=2, min_operand=0, max_operand=3))
    with pytest.raises(ValueError, match="boxed_fraction must lie in"):
        BaseMix(boxed_fraction=1.5)
    with pytest.raises(ValueError, match="style_weights"):
        BaseMix(style_weights=(1.0, 1.0))


def test_exact_share_labels_hit_the_requested_counts():
    labels = exact_share_labels(1000, np.array([0.5, 0.3, 0.2]), np.random.default_rng(0))
    assert np.bincount(labels).tolist() == [500, 300, 200]
    labels = exact_share_labels(7, np.array([0.98, 0.02]), np.random.default_rng(0))
    assert np.bincount(labels, minlength=2).tolist() == [7, 0]
