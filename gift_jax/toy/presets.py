"""Presets of the embedded toy pipeline (`experiments/pipeline.py --preset NAME`): one default and each
other preset as its differences from it.

Budgets on a 2-core CPU (measured figures are in the README): `smoke` under a minute (CI runs it),
`default` ~9 minutes, `sweep` ~18 minutes, `baselines` ~40 minutes, `full` about 5 hours (estimated
from those; 3 seeds, every baseline, the beta sweep, the control world and RL straight from the base);
`paper` (the `tradeoff` world) 62 minutes with 3 runs at once; `dapo` (the same world, DAPO instead of
GRPO) 70 minutes with 3 runs at once on a machine other work kept busy.
"""

from __future__ import annotations

import dataclasses

# (init name, beta or None): "base" means no init stage (RL straight from the base model).
InitSpec = tuple[str, float | None]
GIFT_TOY_BETA = 4.0  # inside the range where beta matters in this world (see the README's beta sweep)


@dataclasses.dataclass(frozen=True)
class Preset:
    seeds: tuple[int, ...]
    variants: tuple[str, ...]
    inits: tuple[InitSpec, ...]
    world_sizes: dict
    init_epochs: int
    init_batch: int
    init_lr: float
    rl_steps: int
    rl_prompts_per_step: int
    rl_group_size: int
    rl_lr: float
    rl_max_new_tokens: int
    eval_problems: int
    pass_k_samples: int  # n for pass@k before / after RL (temperature 1.0, the RL sampling temperature)
    avg_k: int = 4  # avg@k at temperature 0.6 (the paper's protocol)
    rl_eval_every: int = 0  # validation avg@k during RL (0: none)
    baseline_hparams: dict = dataclasses.field(default_factory=dict)
    registered_beta: float | None = None  # the GIFT beta predicted best before the run (reported beside the best)
    jobs: int = 1  # runs at once (separate processes; results do not depend on it)
    rl_recipe: dict = dataclasses.field(default_factory=dict)  # RL config sections over the GRPO defaults
    seeds_by_init: dict = dataclasses.field(default_factory=dict)  # InitSpec -> its seeds (default: `seeds`)

    def runs(self) -> list[tuple[str, str, float | None, int]]:
        """Every (variant, init, beta, seed) of the preset, in report order."""
        return [
            (variant, init, beta, seed)
            for variant in self.variants
            for seed in sorted({s for spec in self.inits for s in self.seeds_by_init.get(spec, self.seeds)})
            for init, beta in self.inits
            if seed in self.seeds_by_init.get((init, beta), self.seeds)
        ]


BASELINES: tuple[InitSpec, ...] = (("sft_entropy", None), ("dft", None), ("asft", None), ("psft", None))
BETA_SWEEP = (0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0, 25.0)

# The default run; every other preset says only how it differs.
DEFAULT = Preset(
    seeds=(0, 1),
    variants=("hard",),
    inits=(("sft", None), ("gift", GIFT_TOY_BETA), ("gift", 8.0)),
    world_sizes=dict(expert=1024, expert_val=128, rl_prompts=2000, eval=256),
    init_epochs=4,
    init_batch=64,
    init_lr=1e-3,
    rl_steps=50,
    rl_prompts_per_step=32,
    rl_group_size=8,
    rl_lr=2e-4,
    rl_max_new_tokens=48,
    eval_problems=256,
    pass_k_samples=8,
)
BASELINE_HPARAMS = {"alpha": 0.01, "gamma": 0.1, "clip_eps": 0.2}
# The `paper` preset's GIFT grid over [0, 25] (SFT is beta -> inf) and its pre-registered optimum:
# see gift_jax/toy/README.md, "The tradeoff world", for the q(y*) each beta gives at each branch.
PAPER_BETAS = (0.0, 4.0, 8.0, 11.0, 14.0, 17.0, 20.0, 25.0)
PAPER_REGISTERED_BETA = 11.0
PAPER_BEST_BETA = 8.0  # measured best under GRPO (`--preset paper`, see the top-level README)
# DAPO (Yu et al. 2025), the RL of `experiments/configs/rl_dapo.yaml` at the toy's size: clip-higher,
# token-mean, no KL, dynamic sampling (up to 10 rounds of prompts a step), the soft overlong punishment
# over a buffer of 8 tokens beyond the GRPO preset's 40 (`rl_max_new_tokens` 48; the longest correct
# solution is 37 tokens), token-level truncated importance weights for the sampler-vs-trainer mismatch.
DAPO_RECIPE = {
    "algo": {
        "clip_low": 0.2,
        "clip_high": 0.28,
        "agg_mode": "token-mean",
        "kl_coef": 0.0,
        "dynamic_sampling": True,
        "max_sampling_rounds": 10,
        "rollout_correction": {"level": "token", "mode": "truncate", "threshold": 2.0},
    },
    "reward": {"overlong_buffer": 8},
}

# The `tradeoff` world (an init stage is needed and beta has a two-sided trade-off): every init of
# the paper, LUFFY and ReLIFT from the base, and the GIFT grid; 3 seeds; 3 runs at once. Sized for
# about 90 minutes on 2 CPU cores (measured time in the README): fewer demonstrations and a
# shorter RL stage than `default`, 128 eval problems.
PAPER = dataclasses.replace(
    DEFAULT,
    seeds=(0, 1, 2),
    variants=("tradeoff",),
    inits=(
        ("base", None),
        ("sft", None),
        *BASELINES,
        ("luffy", None),
        ("relift", None),
        *(("gift", b) for b in PAPER_BETAS),
    ),
    world_sizes=dict(expert=1024, expert_val=128, rl_prompts=2000, eval=128),
    init_epochs=2,
    rl_steps=30,
    rl_prompts_per_step=16,
    rl_max_new_tokens=40,
    eval_problems=128,
    baseline_hparams=BASELINE_HPARAMS,
    registered_beta=PAPER_REGISTERED_BETA,
    jobs=3,
)

PRESETS = {
    "smoke": dataclasses.replace(
        DEFAULT,
        seeds=(0,),
        inits=(("sft", None), ("gift", GIFT_TOY_BETA)),
        world_sizes=dict(expert=256, expert_val=64, rl_prompts=256, eval=32),
        init_epochs=2,
        rl_steps=3,
        rl_prompts_per_step=8,
        rl_group_size=4,
        eval_problems=32,
        pass_k_samples=4,
    ),
    "default": DEFAULT,
    # The beta sweep alone, one seed (about 18 minutes): where between SFT-like and base-like GIFT helps.
    "sweep": dataclasses.replace(
        DEFAULT,
        seeds=(0,),
        inits=(("sft", None), *(("gift", b) for b in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 20.0, 25.0))),
    ),
    # Every init method of the paper at the default sizes, 3 seeds (about 40 minutes).
    "baselines": dataclasses.replace(
        DEFAULT,
        seeds=(0, 1, 2),
        inits=(("base", None), ("sft", None), *BASELINES, ("gift", GIFT_TOY_BETA)),
        baseline_hparams=BASELINE_HPARAMS,
    ),
    "paper": PAPER,
    # The paper's question under DAPO: the `tradeoff` world's base, SFT, ASFT and GIFT at the best
    # (8, under GRPO) and the registered (11) beta, each followed by the identical DAPO recipe; 3 seeds,
    # 5 for GIFT(8) and ASFT (they tied under GRPO). Predictions: gift_jax/toy/README.md.
    "dapo": dataclasses.replace(
        PAPER,
        inits=(
            ("base", None),
            ("sft", None),
            ("asft", None),
            ("gift", PAPER_BEST_BETA),
            ("gift", PAPER_REGISTERED_BETA),
        ),
        seeds_by_init={("asft", None): (0, 1, 2, 3, 4), ("gift", PAPER_BEST_BETA): (0, 1, 2, 3, 4)},
        rl_max_new_tokens=48,
        rl_recipe=DAPO_RECIPE,
    ),
    "full": dataclasses.replace(
        DEFAULT,
        seeds=(0, 1, 2),
        variants=("hard", "control"),
        inits=(("base", None), ("sft", None), *BASELINES, *(("gift", b) for b in BETA_SWEEP)),
        world_sizes=dict(expert=2000, expert_val=256, rl_prompts=2000, eval=256),
        init_epochs=6,
        pass_k_samples=16,
        rl_eval_every=10,
        baseline_hparams=BASELINE_HPARAMS,
    ),
}
