"""Local paths and object-store URLs (`gs://`, `s3://`, `az://`) behind one pathlib-like interface.

`as_path` returns a `pathlib.Path` for a local path (so local behaviour is exactly pathlib's) and an
`etils.epath.Path` for a URL; epath reaches the object store through fsspec (`gcsfs` for `gs://`,
`s3fs` for `s3://`, installed separately on machines that use them), the same route orbax takes for
checkpoints. Object stores differ from a file system in three ways the callers handle here:

- no appending: an object is written whole, so `Appender` keeps the text and rewrites the object
  (at most every `upload_every_s`, and on close);
- no atomic folder rename: writers that rely on one (HF exports) publish file by file instead;
- no locks (no `flock`): see `gift_jax.runtime.workdir.WorkdirLock`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from etils import epath

# Schemes etils.epath reads and writes through fsspec.
URL_SCHEMES = ("gs", "s3", "az")


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names an object-store location (`scheme://...`) rather than a local path."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> Path | epath.Path:
    """`pathlib.Path` for a local path, `etils.epath.Path` for a `gs://` / `s3://` / `az://` URL."""
    if not is_url(path):
        return Path(path)
    scheme = os.fspath(path).split("://", 1)[0]
    if scheme not in URL_SCHEMES:
        raise ValueError(
            f"{os.fspath(path)}: unsupported storage URL scheme {scheme!r}; expected a local path or one of "
            f"{', '.join(s + '://' for s in URL_SCHEMES)}"
        )
    return epath.Path(path)


# What a stage's workdir holds and an exported model folder never does (`run_workdir_marker`).
RUN_MARKERS = ("checkpoints", "run.lock")


def run_workdir_marker(path: str | os.PathLike) -> str | None:
    """What makes `path` a stage's workdir (`"checkpoints/"` or `"run.lock"`), or None for anything else."""
    path = as_path(path)
    for name in RUN_MARKERS:
        if (path / name).exists():
            return f"{name}/" if (path / name).is_dir() else name
    return None


def append_text(path: Path | epath.Path, text: str) -> None:
    """Appends `text` to the file at `path` (an object is read and rewritten whole)."""
    if is_url(path):
        path.write_text((path.read_text() if path.exists() else "") + text)
    else:
        with path.open("a") as f:
            f.write(text)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks (a data file's fingerprint)."""
    digest = hashlib.sha256()
    with as_path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomically(path: Path | epath.Path, text: str) -> None:
    """Replaces the file at `path` with `text` so a reader (or a kill) sees the old file or the new one, never
    a part (a local file is written beside it and renamed; an object is always written whole)."""
    if is_url(path):
        path.write_text(text)
        return
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def copy_file(source: Path | epath.Path, target: Path | epath.Path, *, chunk_bytes: int = 64 * 2**20) -> None:
    """Copies one file between any two locations (local or object store), streaming in chunks."""
    if not is_url(source) and not is_url(target):
        shutil.copy2(source, target)
        return
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, chunk_bytes)


class Appender:
    """A file kept open for appending: a local file as such; on an object store, the text is kept and the
    object rewritten whole by `flush` (at most every `upload_every_s` seconds) and by `close`.

    `binary`: bytes instead of text (TensorBoard event files).
    """

    def __init__(self, path: str | os.PathLike, *, binary: bool = False, upload_every_s: float = 30.0):
        self.path = as_path(path)
        self._binary, self._upload_every_s = binary, upload_every_s
        if not is_url(self.path):
            self._file = self.path.open("ab" if binary else "a")
            return
        self._file = None
        existing = self.path.exists()
        if binary:
            self._content = bytearray(self.path.read_bytes() if existing else b"")
        else:
            self._content = [self.path.read_text()] if existing else []
        self._uploaded_at = time.monotonic()
        self._dirty = False

    def write(self, data: str | bytes) -> None:
        if self._file is not None:
            self._file.write(data)
            return
        if self._binary:
            self._content += data
        else:
            self._content.append(data)
        self._dirty = True

    def flush(self) -> None:
        """Local: flushes to the file. Object store: uploads when `upload_every_s` has passed since the last upload."""
        if self._file is not None:
            self._file.flush()
        elif time.monotonic() - self._uploaded_at >= self._upload_every_s:
            self._upload()

    def _upload(self) -> None:
        if self._dirty:
            if self._binary:
                self.path.write_bytes(bytes(self._content))
            else:
                self.path.write_text("".join(self._content))
            self._dirty = False
        self._uploaded_at = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        else:
            self._upload()


class _TensorBoardObjectStoreFiles:
    """tensorboardX writer factory for object-store URLs, through epath (tensorboardX's own `gs://` writer
    needs `google-cloud-storage` and re-uploads on every flush; this one uploads at most every 30 s)."""

    def open(self, path: str) -> Appender:
        return Appender(path, binary=True)

    def directory_check(self, path: str) -> None:
        as_path(path).mkdir(parents=True, exist_ok=True)


def register_tensorboard_object_stores() -> None:
    """Makes `tensorboardX.SummaryWriter` write `gs://` / `s3://` / `az://` log folders through epath."""
    from tensorboardX import record_writer

    for scheme in URL_SCHEMES:
        record_writer.register_writer_factory(scheme, _TensorBoardObjectStoreFiles())
