"""An in-memory object store behind real `gs://` URLs: the same etils.epath -> fsspec route a bucket takes,
with fsspec's GCS filesystem (gcsfs) replaced by fsspec's memory filesystem. No network.

    @pytest.fixture
    def store(monkeypatch):
        yield from in_memory_gcs(monkeypatch)
"""

from __future__ import annotations

import fsspec
from etils.epath import backend
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry as fsspec_implementations


class InMemoryGCS(MemoryFileSystem):
    """fsspec's memory filesystem answering for `gs://`: paths keep the bucket as their first component."""

    protocol = ("gs", "gcs")
    store: dict = {}  # its own store, not the shared `memory://` one
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = fsspec.utils.stringify_path(path)
        for prefix in ("gs://", "gcs://"):
            path = path.removeprefix(prefix)
        return super()._strip_protocol(path)


def in_memory_gcs(monkeypatch):
    """`gs://` URLs resolve to an empty in-memory store until the test ends; yields that store's filesystem."""
    monkeypatch.setitem(fsspec_implementations, "gcs", InMemoryGCS)
    monkeypatch.setitem(fsspec_implementations, "gs", InMemoryGCS)
    InMemoryGCS.clear_instance_cache()
    backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the filesystem per scheme
    InMemoryGCS.store.clear()
    InMemoryGCS.pseudo_dirs[:] = [""]
    yield fsspec.filesystem("gcs")
    InMemoryGCS.store.clear()
    backend.fsspec_backend._get_filesystem.cache_clear()
