"""Seeded, disjoint problem splits and the rows of every toy-world file (no I/O here).

The problem partition depends only on (seed, sizes, task). The base corpus depends on those and on
the variant's `BaseMix`: `hard` and `control` share one mix (and so one pretrained base) and differ
only in the expert's style; `tradeoff` has a base of its own (see `VARIANT_MIX`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gift_jax.toy import styles
from gift_jax.toy.task import Problem, TaskSpec, problem_from_id, sample_problem_ids
from gift_jax.toy.tokenizer import render_conversation

# Variant -> the one style the expert demonstrates. `hard`: the expert skips the intermediate
# steps, the style a small model gets wrong most often. `control`: the expert writes a running sum,
# the easiest style, so an init that keeps the base's alternatives has nothing better to find.
# `tradeoff`: the expert again skips the steps, but its base never writes `direct` and almost never
# boxes (see `VARIANT_MIX`), so what the demonstrations carry is needed and what hurts is implausible.
EXPERT_STYLE: dict[str, str] = {"hard": styles.DIRECT, "control": styles.LEFT, "tradeoff": styles.DIRECT}


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    """Number of problems per split (each split's problems are distinct and disjoint from all others).

    pretrain: base documents (one per problem); expert / expert_val: init-stage demonstrations
    for training / held-out NLL; rl_prompts: RL-stage prompts; eval: held-out test problems.
    """

    pretrain: int = 40_000
    expert: int = 2_000
    expert_val: int = 256
    rl_prompts: int = 2_000
    eval: int = 256

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SplitSizes.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_overrides(cls, overrides: SplitSizes | dict[str, int] | None) -> SplitSizes:
        """Defaults updated by a mapping of split name -> size (unknown names are an error)."""
        if isinstance(overrides, cls):
            return overrides
        overrides = overrides or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"sizes: unknown split name(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(cls(), **overrides)


@dataclasses.dataclass(frozen=True)
class BaseMix:
    """How the base corpus renders its problems.

    style_weights: relative frequency of each style in `styles.STYLES` order (uniform: each
      style's header gets base probability ~0.25 at the branching token).
    boxed_fraction: share of documents ending in `\\boxed{}` instead of `answer: `; the format
      choice is drawn independently of the style.
    pretrain_label_smoothing: eps of the base's pretraining loss. A token the corpus never shows at
      a position then keeps a probability near eps / V there (as a large LM puts a small, finite
      mass on implausible continuations) instead of being driven towards zero without bound.
    """

    style_weights: tuple[float, ...] = (1.0,) * len(styles.STYLES)
    boxed_fraction: float = 0.02
    pretrain_label_smoothing: float = 0.0  # the base's SFT target (1 - eps) onehot + eps / V: no token at ~0

    def __post_init__(self):
        weights = np.asarray(self.style_weights, dtype=np.float64)
        if weights.shape != (len(styles.STYLES),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"BaseMix.style_weights: need {len(styles.STYLES)} non-negative weights "
                f"(for {styles.STYLES}) with a positive sum, got {self.style_weights!r}"
            )
        if not 0.0 <= self.boxed_fraction <= 1.0:
            raise ValueError(f"BaseMix.boxed_fraction must lie in [0, 1], got {self.boxed_fraction}")
        if not 0.0 <= self.pretrain_label_smoothing < 1.0:
            raise ValueError(
                f"BaseMix.pretrain_label_smoothing must lie in [0, 1), got {self.pretrain_label_smoothing}"
            )

    @property
    def style_probabilities(self) -> np.ndarray:
        """Normalised style weights. Returns float64 [len(STYLES)]."""
        weights = np.asarray(self.style_weights, dtype=np.float64)
        return weights / weights.sum()


# The base mix of each variant. `tradeoff`: the three stepwise styles equally often and never
# `direct` (its header's probability decays towards the smoothing floor eps / V = 1e-8), and one
# document in 1,000 boxed (40 of the 40,000): rare enough that a short GRPO stage from the base
# seldom samples a boxed answer, common enough that a moderate beta learns it. (A first base with
# one in 10,000 ended near 3e-6 for `\\boxed{`, as unlikely as `direct`: no beta could separate them.)
VARIANT_MIX: dict[str, BaseMix] = {
    "hard": BaseMix(),
    "control": BaseMix(),
    "tradeoff": BaseMix(style_weights=(1.0, 1.0, 1.0, 0.0), boxed_fraction=1e-3, pretrain_label_smoothing=2.7e-7),
}


def exact_share_labels(count: int, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Category per item with counts matching `probabilities` as closely as integers allow.

    Largest-remainder rounding, then a random order; beats i.i.d. draws because the corpus
    statistics are then exact and the tests can hold them to tight ranges. Returns int64 [count].
    """
    raw = probabilities * count
    counts = np.floor(raw).astype(np.int64)
    remainder_order = np.argsort(-(raw - counts), kind="stable")
    counts[remainder_order[: count - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(probabilities)), counts))


def split_problems(task: TaskSpec, sizes: SplitSizes, seed: int) -> dict[str, list[Problem]]:
    """Disjoint problem lists per split name (`SplitSizes` field order), fixed by `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    counts = dataclasses.asdict(sizes)
    ids = sample_problem_ids(task, sum(counts.values()), rng)
    splits, start = {}, 0
    for name, count in counts.items():
        splits[name] = [problem_from_id(task, int(i)) for i in ids[start : start + count]]
        start += count
    return splits


def pretrain_rows(problems: list[Problem], mix: BaseMix, seed: int) -> list[dict[str, str]]:
    """Base documents `{"text": chat rendering of (prompt, solution) with EOS}`, styles mixed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    style_ids = exact_share_labels(len(problems), mix.style_probabilities, rng)
    boxed = exact_share_labels(len(problems), np.array([1.0 - mix.boxed_fraction, mix.boxed_fraction]), rng).astype(
        bool
    )
    return [
        {"text": render_conversation(p.prompt, styles.render_solution(p, styles.STYLES[s], boxed=b))}
        for p, s, b in zip(problems, style_ids, boxed)
    ]


def expert_rows(problems: list[Problem], variant: str) -> list[dict[str, str]]:
    """Demonstrations `{"sft_prompt", "solution"}`: the variant's one style, always boxed.

    `sft_prompt` is the raw user turn; the init stage applies the chat template and appends EOS
    to `solution`.
    """
    if variant not in EXPERT_STYLE:
        raise ValueError(f"unknown toy-world variant {variant!r}; expected one of {sorted(EXPERT_STYLE)}")
    style = EXPERT_STYLE[variant]
    return [{"sft_prompt": p.prompt, "solution": styles.render_solution(p, style, boxed=True)} for p in problems]


def rl_prompt_rows(problems: list[Problem], variant: str) -> list[dict[str, str]]:
    """RL prompts `{"prompt": raw user turn, "answer": ground truth, "solution": the expert's}`.

    GRPO reads prompt and answer; LUFFY and ReLIFT also train on the expert solution.
    """
    demonstrations = expert_rows(problems, variant)
    return [
        {"prompt": p.prompt, "answer": p.answer, "solution": d["solution"]} for p, d in zip(problems, demonstrations)
    ]


def eval_rows(problems: list[Problem]) -> list[dict[str, str]]:
    """Held-out test problems `{"problem": raw user turn, "answer": ground-truth string}`."""
    return [{"problem": p.prompt, "answer": p.answer} for p in problems]
