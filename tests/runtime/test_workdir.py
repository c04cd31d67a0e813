"""Workdir checks that every process of a multi-host run performs on the same shared folder."""

from concurrent.futures import ThreadPoolExecutor

from gift_jax.runtime.workdir import check_writable


def test_concurrent_writability_checks_of_one_workdir_do_not_interfere(tmp_path):
    # Processes of one run start together and probe the same workdir; none may trip over another's probe.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: check_writable(tmp_path / "run"), range(400)))
    assert results == [tmp_path / "run"] * 400
    assert list((tmp_path / "run").iterdir()) == []  # no probe left behind
