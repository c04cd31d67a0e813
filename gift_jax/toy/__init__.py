"""The embedded toy reasoning world: multi-number addition solved in several styles.

`write_world` writes the corpora, splits and tokenizer; `verify` scores a response like the math
reward; `classify_style` says which solution style a response chose.
"""

from gift_jax.toy.corpus import EXPERT_STYLE, BaseMix, SplitSizes
from gift_jax.toy.styles import NO_STYLE, STYLE_HEADERS, STYLES, classify_style, render_solution
from gift_jax.toy.task import Problem, TaskSpec
from gift_jax.toy.tokenizer import VOCAB, parse_conversation, render_conversation, save_tokenizer
from gift_jax.toy.verify import verify
from gift_jax.toy.world import write_world

__all__ = [
    "EXPERT_STYLE",
    "NO_STYLE",
    "STYLES",
    "STYLE_HEADERS",
    "VOCAB",
    "BaseMix",
    "Problem",
    "SplitSizes",
    "TaskSpec",
    "classify_style",
    "parse_conversation",
    "render_conversation",
    "render_solution",
    "save_tokenizer",
    "verify",
    "write_world",
]
