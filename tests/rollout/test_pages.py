"""The host's book of the paged cache: pages handed out as rows grow, shared, taken back, moved; a
prompt's pages shared by its samples across insert rounds."""

import jax
import numpy as np
import pytest

from gift_jax.rollout import SamplingConfig
from gift_jax.rollout.admission import Admission, Requests
from gift_jax.rollout.pages import PagePool


def test_pages_are_handed_out_per_device_and_come_back():
    pool = PagePool(devices=2, pages_per_device=4, slots=4, pages_per_slot=3, page_size=8)
    assert pool.grow(0, 9) and pool.table[0, :2].tolist() == [1, 2]  # 9 positions: 2 pages, page 0 is scratch
    assert pool.grow(0, 16) and pool.held[0] == 2  # still 2 pages
    assert not pool.grow(1, 9) and pool.held[1] == 0  # device 0 has one page left: nothing given
    assert pool.grow(2, 24) and pool.table[2].tolist() == [1, 2, 3]  # device 1's own pool, own indices
    pool.release(0)
    assert pool.free_pages(0) == 3 and (pool.table[0] == 0).all()
    with pytest.raises(ValueError, match="exceed"):
        pool.grow(1, 25)


def test_shared_pages_go_free_with_their_last_holder():
    pool = PagePool(devices=1, pages_per_device=6, slots=3, pages_per_slot=4, page_size=4)
    pool.grow(0, 8)
    pool.share(1, pool.table[0, :2].tolist())
    assert pool.grow(1, 12) and pool.table[1, :3].tolist() == [1, 2, 3]
    pool.release(0)
    assert pool.free_pages(0) == 2  # pages 1, 2 still listed by slot 1
    pool.release(1)
    assert pool.free_pages(0) == 5


def test_pages_follow_their_rows_when_the_slots_shrink():
    pool = PagePool(devices=2, pages_per_device=5, slots=8, pages_per_slot=2, page_size=4)
    pool.grow(2, 5)  # device 0, local slot 2
    pool.grow(5, 3)  # device 1, local slot 1
    pool.move(np.array([2, 0, 1, 0]))  # each device keeps 2 slots: its live one first
    assert pool.slots_per_device == 2 and pool.held.tolist() == [2, 0, 1, 0]
    assert pool.table[0].tolist() == [1, 2] and pool.table[2].tolist() == [1, 0]


def test_a_prompts_pages_are_shared_across_rounds_and_its_partial_page_copied():
    requests = Requests(
        prompts=[list(range(1, 12))], samples=3, budgets=[8], keys=jax.random.split(jax.random.key(0), 3)
    )
    pool = PagePool(devices=1, pages_per_device=12, slots=2, pages_per_slot=5, page_size=4)
    admission = Admission(requests, pool, SamplingConfig(max_new_tokens=8), slots=2, rows_bucket=4)
    assert admission.admit(0, 0, 14)  # prefix 10 positions: 2 whole pages + a partial one, then 4 more
    first = admission.batch()
    assert admission.prefilled == 1 and first.write_device.tolist()[:2] == [0, 0]  # the row's pages, the template
    shared = pool.table[0, :2].tolist()
    assert admission.admit(1, 1, 14)  # a later round: no prefill, the whole pages shared, the last copied
    second = admission.batch()
    assert admission.prefilled == 1 and (second.write_device == pool.devices).all()
    assert pool.table[1, :2].tolist() == shared and pool.table[1, 2] != pool.table[0, 2]
    assert second.copy_target[0] == pool.table[1, 2] and second.copy_device[0] == 0
    pool.release(0)
    pool.release(1)
    assert pool.free_pages(0) == 11 - 3  # the prompt still waits for sample 2: its pages and template are kept
    assert admission.admit(2, 0, 14) and admission.batch() is not None
    pool.release(0)
    assert pool.free_pages(0) == 11  # all its samples in: the cache let go, the last row too
