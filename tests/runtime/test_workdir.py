"""Workdir checks that every process of a multi-host run performs on the same shared folder."""

from concurrent.futures import ThreadPoolExecutor

from gift_jax.runtime.workdir import check_writable


def test_concurrent_writability_checks_of_one_workdir_do_not_interfere(tmp_path):
    # Processes of one run start together and probe the same workdir; none may trip over another's probe.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: check_writable(tmp_path / "run"), range(400)))
    assert results == [tmp_path / "run"] * 400
    assert list((tmp_path / "run").iterdir()) == []  # no probe left behind


def test_a_cloud_url_is_refused_not_created_as_a_local_folder(tmp_path, monkeypatch):
    import pytest

    from gift_jax.runtime.workdir import WorkdirRefused

    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkdirRefused, match="gs://bucket/run: cloud URLs are not supported"):
        check_writable("gs://bucket/run")
    assert not (tmp_path / "gs:").exists()
