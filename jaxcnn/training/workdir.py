"""The workdir of a run: created with a clear error when it cannot be, and locked so that two
runs never train into the same checkpoints and logs."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

import jax

from jaxcnn.errors import UserError

LOCK_FILE = ".lock"
DISK_FULL_EXIT_STATUS = 4


def prepare_workdir(workdir: str) -> None:
    """Create ``workdir`` if needed; a one-line :class:`UserError` if it cannot hold a run."""
    if not workdir:
        raise UserError("--workdir is empty; give the directory for checkpoints and logs")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir!r} is a file, not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create workdir {workdir!r}: {error.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"workdir {workdir!r} is not writable")


class WorkdirLock:
    """An exclusive ``flock`` on ``WORKDIR/.lock``, holding the owner's pid, until ``close``.

    The kernel drops the lock when its process ends, however it ends, so a crashed run leaves
    no stale lock. Only process 0 of a multi-process run takes it (all processes share the
    workdir).
    """

    def __init__(self, workdir: str) -> None:
        self._file = None
        if jax.process_index() != 0:
            return
        path = os.path.join(workdir, LOCK_FILE)
        self._file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise UserError(
                f"workdir {workdir!r} is in use by another run (pid {holder}); wait for it to "
                "finish or stop it, or use another --workdir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def check_free_space(workdir: str, checkpoint_bytes: int) -> None:
    """Raise ENOSPC before a checkpoint of ``checkpoint_bytes`` that would not fit: a save that
    runs out of space fails inside orbax's background threads, noisily."""
    free = shutil.disk_usage(workdir).free
    if free < checkpoint_bytes + (16 << 20):  # and room for logs and orbax's metadata
        raise OSError(
            errno.ENOSPC, f"No space left for a checkpoint of {checkpoint_bytes:,} bytes", workdir
        )


def _is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` or one it was raised from reports a full disk (orbax and tensorstore
    wrap the OSError, or keep only its text)."""
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def complete_checkpoints(workdir: str) -> list[int]:
    """Steps of the finished checkpoints in ``workdir`` (orbax renames a save when complete)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def disk_full_message(error: BaseException, workdir: str) -> str | None:
    """One line for a run that ``error`` stopped on a full disk; None for other errors."""
    if not _is_disk_full(error):
        return None
    steps = complete_checkpoints(workdir)
    kept = f"the last complete checkpoint is step {steps[-1]}" if steps else "no checkpoint"
    return (
        f"no space left on the device of workdir {workdir!r}; {kept}. Free space there and "
        "re-run the same command to resume"
    )
