"""The project's own error types: what a command line reports as one `error: ...` line and an exit status.

Anything else (a shape, a sharding, a bug) keeps its traceback. Every message names its culprit: the
file, key, row, tensor or folder to fix.

Exit statuses of the command-line scripts (`gift_jax.cli`, `experiments/*.py`):

- 0: done.
- 1: an unexpected error (a traceback).
- 2: `InputError`, a bad config, data file, model folder, workdir or flag, found before training
  starts; nothing saved was touched.
- 3: `RunFailure`, the run cannot go on (a full disk or another failed write, non-finite updates);
  the newest checkpoint stays usable.
- 75: `RunStopped`, SIGTERM / SIGINT; the current step was checkpointed, and relaunching the same
  command resumes it (sysexits' EX_TEMPFAIL: try again).
"""

from __future__ import annotations

import os
import re


class GiftError(Exception):
    """Base of the errors reported as one line; `exit_status` is the command line's status."""

    exit_status = 1


class InputError(GiftError, ValueError):
    """A bad config, data file, model folder, workdir or command-line flag (the message names it)."""

    exit_status = 2


class ModelFolderError(InputError):
    """A Hugging Face model folder that cannot be used: config.json, tensors or tokenizer files."""


class RunFailure(GiftError, RuntimeError):
    """The run cannot go on; what was saved before stays usable (see the message for what to do)."""

    exit_status = 3


class StorageError(RunFailure):
    """A write failed (disk full, quota, permissions, a vanished mount); names the file or folder."""


class RunStopped(GiftError):
    """The run stopped on SIGTERM / SIGINT after checkpointing its current step; relaunch to resume."""

    exit_status = 75


def io_reason(err: BaseException) -> str:
    """The OS's words for a failed write (e.g. "No space left on device"), found in `err`, its causes, or an
    `os_error_code` that tensorstore writes into its message; else the message's first line."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    code = re.search(r"os_error_code='?(\d+)", str(err))
    if code:
        return os.strerror(int(code.group(1)))
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def storage_error(what: str, err: BaseException) -> StorageError:
    """A `StorageError` for a failed write of `what` (a path), keeping the OS's words (e.g. "No space left
    on device") so the one-line message says what to fix."""
    return StorageError(f"{what}: could not write ({io_reason(err)})")
