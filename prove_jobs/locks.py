"""The OS locks on a run dir: how every lock file is opened (``fcntl``, or ``soft`` marker files), and the training
lock ``prove_train.lock`` a payload holds for its whole training (docs/locks.md).

The kernel drops an flock when its process dies, even by SIGKILL, so the training lock is the ground truth
for "is someone training here now". Its file stays after release: a conflict is a failed non-blocking
acquire, never the file's existence.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

from prove_jobs.errors import LockConflict, RunError
from prove_jobs.identity import file_owner
from prove_jobs.runs import TRAIN_LOCK

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from filelock import BaseFileLock


def file_lock(path: Path, lock_mode: str, *, singleton: bool = False, timeout_s: float = -1) -> BaseFileLock:
    """filelock's lock for ``path``: ``fcntl`` never falls back to marker files on its own (filelock 4 would,
    on a filesystem without flock: two hosts would then each believe they hold it); ``soft`` says so."""
    from filelock import FileLock, SoftFileLock

    if lock_mode == "soft":
        return SoftFileLock(path, timeout=timeout_s, mode=0o664, is_singleton=singleton)
    if lock_mode != "fcntl":
        raise RunError(f"lock mode {lock_mode!r} is unknown (valid: fcntl, soft)")
    return FileLock(path, timeout=timeout_s, mode=0o664, is_singleton=singleton, fallback_to_soft=False)


def lock_error(path: Path, exc: OSError) -> RunError:
    """A lock file that cannot be used, in one line that says what to do."""
    if exc.errno == errno.ENOSYS:
        return RunError(f"{path}: this filesystem has no working flock; set [sharing] lock_mode = \"soft\" in the "
                        "sweep file (docs/locks.md)")
    if exc.errno == errno.ELOOP:
        return RunError(f"{path}: a symbolic link where prove-jobs keeps a lock; it never follows one: remove it")
    return RunError(f"{path}: cannot open the lock ({exc.strerror or exc})")


def train_lock(run_dir: Path, mode: str = "fcntl", timeout_s: float = 0) -> BaseFileLock:
    return file_lock(run_dir / TRAIN_LOCK, mode, timeout_s=timeout_s)


def training_lock_held(run_dir: Path, mode: str = "fcntl") -> bool | None:
    """Is a live process training in ``run_dir``? ``None`` when the lock cannot be probed."""
    from filelock import Timeout

    path = run_dir / TRAIN_LOCK
    if mode == "soft":
        # SoftFileLock's marker exists exactly while held (filelock removes stale ones on acquire).
        return path.exists()
    if not path.exists():
        return False
    lock = train_lock(run_dir, mode)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return None  # e.g. a colleague's lock file we may not open
    lock.release()
    return False


@contextmanager
def training_lock(run_dir: Path, mode: str = "fcntl", wait_s: float = 5) -> Iterator[None]:
    """Hold the run's training lock for the block, or raise ``LockConflict``.

    Waits a few seconds rather than none: ``status`` probes the lock by taking it for an
    instant, and a training that starts at that instant must not give up.
    """
    from filelock import Timeout

    lock = train_lock(run_dir, mode, wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise LockConflict(f"{run_dir}: another process is training this run ({TRAIN_LOCK} is held)") from None
    except PermissionError:
        raise RunError(
            f"{run_dir / TRAIN_LOCK}: cannot open the training lock (owner: {file_owner(run_dir / TRAIN_LOCK)}); "
            "ask them to make it group-writable (sharing.umask in the sweep file)"
        ) from None
    except OSError as exc:  # no flock on this filesystem, a planted link
        raise lock_error(run_dir / TRAIN_LOCK, exc) from None
    try:
        yield
    finally:
        lock.release()
