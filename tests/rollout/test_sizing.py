"""`max_concurrent_rows="auto"`: slots and page pool sized from the free device memory."""

import jax
import pytest

from gift_jax.models import ModelConfig
from gift_jax.rollout import SamplingConfig
from gift_jax.rollout.plan import plan_cache, slots_for_budget
from gift_jax.rollout.sizing import HBM_MARGIN, LOGITS_COPIES, ROW_SHARE, kv_bytes_per_position, size_cache

GIB = 2**30
# Qwen2.5-7B's attention shapes (28 layers, 4 kv heads of 128), a small vocabulary for round numbers.
MODEL = ModelConfig(
    family="qwen2",
    vocab_size=1024,
    hidden_size=3584,
    intermediate_size=18944,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    head_dim=128,
)


def test_kv_bytes_follow_the_tensor_split_of_the_kv_heads():
    assert kv_bytes_per_position(MODEL, "bfloat16") == 28 * 4 * 2 * 128 * 2  # 56 KiB
    assert kv_bytes_per_position(MODEL, "bfloat16", tensor=4) == 28 * 1 * 2 * 128 * 2
    assert kv_bytes_per_position(MODEL, "bfloat16", tensor=8) == 28 * 4 * 2 * 128 * 2  # 8 does not divide 4


def _paper_size(free_gib: float, hbm_gib: float, rows: int = 1024, **mesh):
    """The sizing of the paper's rollouts (rows of up to 512 + 8192 positions, bf16 cache, pages of 64)."""
    return size_cache(
        MODEL,
        rows=rows,
        longest_row=8703,
        page_size=64,
        cache_dtype="bfloat16",
        free_bytes=int(free_gib * GIB),
        hbm_bytes=int(hbm_gib * GIB),
        **mesh,
    )


def test_every_row_gets_a_slot_when_the_pool_holds_them():
    size = _paper_size(80, 96, blocks=8, tensor=4)
    assert size.slots == 1024 and size.slots_per_device == 128
    page = 64 * 28 * 2 * 128 * 2
    usable = 80 * GIB - HBM_MARGIN * 96 * GIB - 128 * LOGITS_COPIES * 1024 * 4
    assert size.pages_per_device == int(usable // page) and size.pool_bytes == size.pages_per_device * page


def test_slots_shrink_to_what_the_pool_holds_at_the_row_share():
    size = _paper_size(8, 16, blocks=8, tensor=4)
    pages_for_row = -(-8703 // 64)
    assert size.slots_per_device < 128 and size.slots == 8 * size.slots_per_device
    assert size.pages_per_device - 1 >= size.slots_per_device * ROW_SHARE * pages_for_row
    assert size.pages_per_device - 1 < (size.slots_per_device + 1) * ROW_SHARE * pages_for_row
    with pytest.raises(ValueError, match="cannot hold one row"):
        _paper_size(2, 16, rows=8)


def test_auto_without_device_memory_keeps_the_fixed_rule():
    config = SamplingConfig(max_new_tokens=8192, max_concurrent_rows="auto")
    assert jax.devices()[0].memory_stats() is None  # CPU
    assert plan_cache(config, MODEL, rows=1024, longest_row=8703) == (slots_for_budget(8192), None, None)
    slots, pages, size = plan_cache(config, MODEL, rows=1024, longest_row=8703, memory=(80 * GIB, 96 * GIB))
    assert size is not None and (slots, pages) == (size.slots, size.pages_per_device)
