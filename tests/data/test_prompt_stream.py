"""`PromptStream`: epochs reshuffle, state resumes the exact order, processes split each batch."""

import pytest

from gift_jax.data.prompt_stream import PromptStream

RECORDS = list(range(10))


def _draw(stream, sizes):
    return [stream.next_batch(size) for size in sizes]


def test_every_epoch_visits_each_record_once_in_a_new_order():
    stream = PromptStream(RECORDS, seed=0)
    first, second = _draw(stream, [10, 10])
    assert sorted(first) == sorted(second) == RECORDS and first != second
    assert stream.get_state() == {"epoch": 2, "position": 0, "num_records": 10, "seed": 0}


def test_a_batch_crosses_the_epoch_boundary():
    stream = PromptStream(RECORDS, seed=1)
    a, b = _draw(stream, [6, 6])
    assert stream.get_state()["epoch"] == 1 and stream.get_state()["position"] == 2
    assert sorted(a + b[:4]) == RECORDS  # the first epoch's last 4 records, then 2 of the next


def test_restored_state_continues_exactly_as_an_uninterrupted_stream():
    uninterrupted = PromptStream(RECORDS, seed=3)
    expected = _draw(uninterrupted, [4, 4, 4, 4, 4])
    first = PromptStream(RECORDS, seed=3)
    head = _draw(first, [4, 4, 4])
    resumed = PromptStream(RECORDS, seed=3)
    resumed.set_state(dict(first.get_state()))
    assert head + _draw(resumed, [4, 4]) == expected


def test_state_of_another_dataset_or_seed_is_refused():
    state = PromptStream(RECORDS, seed=0).get_state()
    with pytest.raises(ValueError, match="does not match 9 records"):
        PromptStream(RECORDS[:9], seed=0).set_state(state)
    with pytest.raises(ValueError, match="seed 1"):
        PromptStream(RECORDS, seed=1).set_state(state)


def test_processes_take_disjoint_strided_shares_of_the_same_global_batch():
    whole = PromptStream(RECORDS, seed=5).next_batch(6)
    shares = [PromptStream(RECORDS, seed=5, process_index=i, process_count=2).next_batch(6) for i in range(2)]
    assert shares == [whole[0::2], whole[1::2]]


def test_no_records_is_refused():
    with pytest.raises(ValueError, match="no records"):
        PromptStream([], seed=0)
