"""A run's metadata, ``prove_run.json``: what prove-jobs records about a run, read and written atomically, and the
short-lived mutex behind every change to it.

Only what cannot be re-derived is stored: who submitted, where, the job id and the
times the payload saw. Progress and mIoU always come from mmengine's own logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.errors import ClaimMoved, CorruptMetadata, ProveJobsError, RunError
from prove_jobs.fsafe import atomic_write_text
from prove_jobs.locks import file_lock, lock_error
from prove_jobs.runs import META_FILE, META_MUTEX

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from filelock import BaseFileLock

MAX_META_BYTES = 1 << 20  # a prove_run.json is about 1 KB: anything this big is not one
MUTEX_WAIT_S = 120.0  # a metadata update waits this long for another process's (their holds are short)


class Stage(enum.Enum):
    """Where a run's last submission is, by what prove-jobs recorded (not what the scheduler says)."""

    SUBMITTED = "submitted"
    """Claimed and queued; no training of this submission has started yet."""
    STARTED = "started"
    """A training of this submission started (again, after a requeue) and has recorded no end."""
    FINISHED = "finished"
    """The training reached its last iteration."""
    CANCELLED = "cancelled"
    """Someone ran ``prove-jobs cancel``: it stays cancelled until submitted again by name."""
    FAILED = "failed"
    """The job recorded a failure (or its submission failed)."""
    RELEASED = "released"
    """``prove-jobs unlock`` cleared the claim."""


@dataclass(frozen=True)
class Lifecycle:
    """A submission's stage, when it entered it and, for a cancel or an unlock, by whom.

    Derived from ``prove_run.json``'s timestamps (:attr:`RunMeta.lifecycle`), whose on-disk form is unchanged: an
    end outranks a start, and among ends a finish outranks a cancel, a cancel a failure, a failure a release.
    """

    stage: Stage
    at: float | None
    by: str | None = None

    @property
    def open(self) -> bool:
        """The claim stands: the submission has recorded no end."""
        return self.stage in (Stage.SUBMITTED, Stage.STARTED)

    @property
    def started(self) -> bool:
        """A training of this submission started and has recorded no end."""
        return self.stage is Stage.STARTED


@dataclass(frozen=True)
class RunMeta:
    """What prove-jobs records about a run. Times are Unix seconds; ``None`` means not yet."""

    model: str
    variant: str
    sweep_file: str = ""
    config_hash: str = ""
    executor: str = ""
    job_id: str | None = None
    user: str = ""
    host: str = ""
    pid: int | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    failed_at: float | None = None
    cancelled_at: float | None = None
    cancelled_by: str | None = None  # who ran `prove-jobs cancel`: the run stays cancelled until named again
    token: str = ""  # the submission's: a job writes only while the claim is still its own
    layout: str = ""  # "2x4 GPUs" when the job trains on several processes (DDP), as submitted
    nodes: str = ""  # SLURM's node list of the newest start when it spans several nodes ("mn[1-2]")
    gpus: int | None = None  # GPUs the job asked for in all (nodes x gpus_per_node): GPU-hours
    starts: int = 0  # trainings started under this token (the first is 1)
    seed: int | None = None  # mmengine's randomness.seed the run trains with (as rendered)
    pid_start: int | None = None  # when `pid` started (clock ticks since boot): a reused pid is another process
    job_start: int | None = None  # the same for a local job's controller (its pid is the job id)
    boot_id: str | None = None  # the boot of `host` those were read in
    released_at: float | None = None  # the claim was cleared by `prove-jobs unlock`
    released_by: str | None = None
    error: str | None = None
    max_iters: int | None = None
    attempts: int = 0  # trainings started in this run dir, over all submissions
    restarts: int = 0  # trainings started again within the last submission (requeue after preemption or time limit)
    requeued_at: float | None = None  # the job was stopped and asked to be requeued; cleared when it starts again
    lost_start: str | None = None  # the previous start ended without a word (its node died): what SLURM says
    lock_mode: str = "fcntl"  # the sweep's sharing.lock_mode: every lock on this run dir uses it

    @property
    def lifecycle(self) -> Lifecycle:
        """Where the last submission is: the one reading of the timestamps below (status, claims, submit)."""
        if self.finished_at is not None:
            return Lifecycle(Stage.FINISHED, self.finished_at)
        if self.cancelled_at is not None:
            return Lifecycle(Stage.CANCELLED, self.cancelled_at, self.cancelled_by)
        if self.failed_at is not None:
            return Lifecycle(Stage.FAILED, self.failed_at)
        if self.released_at is not None:
            return Lifecycle(Stage.RELEASED, self.released_at, self.released_by)
        if self.started_at is not None:
            return Lifecycle(Stage.STARTED, self.started_at)
        return Lifecycle(Stage.SUBMITTED, self.submitted_at)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object, path: object = META_FILE) -> RunMeta:
        """Each field checked (``UnreadableValue`` naming the first that does not fit); unknown keys come
        from newer versions of prove-jobs: kept reading, dropped."""
        from prove_jobs.values import meta_fields

        return cls(**meta_fields(data, path))  # type: ignore[arg-type]


def now() -> float:
    return time.time()


def meta_path(run_dir: Path) -> Path:
    return run_dir / META_FILE


def read_meta(run_dir: Path) -> RunMeta | None:
    """The run's metadata, or ``None`` for a run dir prove-jobs never wrote to.

    Never through a symbolic link: prove-jobs writes this file by renaming a new one over it, so
    a link is someone's plant (to a fifo that would hang ``status``, to a file of yours).
    """
    path = meta_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptMetadata(f"{path}: a symbolic link, not run metadata (prove-jobs never makes one): "
                                  "remove it") from None
        raise RunError(f"{path}: cannot read run metadata ({exc.strerror})") from exc
    try:
        with open(fd, "rb", closefd=True) as handle:
            raw = handle.read(MAX_META_BYTES + 1)
    except OSError as exc:
        raise RunError(f"{path}: cannot read run metadata ({exc.strerror})") from exc
    from prove_jobs.values import parse_json

    try:
        if len(raw) > MAX_META_BYTES:
            raise ValueError(f"over {MAX_META_BYTES} bytes")
        data = parse_json(raw)
    except ValueError as exc:
        raise CorruptMetadata(f"{path}: corrupt run metadata ({exc}); move it aside to reset the run") from exc
    # each field's type and range (values.META_FIELDS): one planted value is this run's warning, not a traceback
    return RunMeta.from_json(data, path)


def read_meta_quietly(run_dir: Path) -> RunMeta | None:
    """The metadata, or ``None`` when it is missing or corrupt (the claim check reports that)."""
    try:
        return read_meta(run_dir)
    except RunError:
        return None


def write_meta(run_dir: Path, meta: RunMeta) -> RunMeta:
    # 0664 less the umask: a colleague taking the run over rewrites it (docs/locks.md)
    atomic_write_text(meta_path(run_dir), json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n")
    return meta


def update_meta(run_dir: Path, *, token: str | None = None, wait_s: float = MUTEX_WAIT_S, **changes: Any) -> RunMeta:
    """Read, change and atomically rewrite the metadata of a run prove-jobs submitted.

    Serialised by a short-lived lock: ``submit`` records the job id while a local job may
    already be recording its start, and neither write may be lost. ``token``: the claim must
    still be that submission's and still open to it (a job writes only to its own claim: not
    after a take-over, an ``unlock`` or a ``cancel``), else ``ClaimMoved`` and nothing is written.
    """
    with locked(run_dir, wait_s):
        meta = read_meta(run_dir)
        if meta is None:
            raise RunError(f"{meta_path(run_dir)}: no run metadata; submit the run with prove-jobs first")
        if token is not None:
            check_token(run_dir, meta, token)
        return write_meta(run_dir, dataclasses.replace(meta, **changes))


def check_token(run_dir: Path, meta: RunMeta, token: str) -> None:
    """Raise ``ClaimMoved`` unless ``meta`` is still the open claim of the submission ``token``."""
    if meta.token != token:
        raise ClaimMoved(f"{run_dir}: the claim is no longer this submission's: {meta.user} submitted it again "
                         f"({meta.executor} job {meta.job_id or '?'}); this job writes nothing and does not train")
    ended = ((meta.released_at, f"released by {meta.released_by} (prove-jobs unlock)"),
             (meta.cancelled_at, f"cancelled by {meta.cancelled_by}"))
    for when, why in ended:
        if when is not None:
            raise ClaimMoved(f"{run_dir}: this job's claim was {why}; it writes nothing and does not train")


_HELD: dict[Path, BaseFileLock] = {}  # the metadata mutexes this process holds: a nested `locked` reuses its own


@contextlib.contextmanager
def locked(run_dir: Path, wait_s: float = MUTEX_WAIT_S, lock_mode: str | None = None) -> Iterator[None]:
    """Hold the run's metadata mutex for the block (re-entrant within a process), waiting at most ``wait_s``.

    ``lock_mode``: the sweep's, for a run dir whose metadata does not say yet (a first claim); else the
    recorded one. A nested call uses the mutex already held, whatever the metadata says by then (a first
    claim writes the mode inside the block: a marker lock taken on the same path would wait on itself).
    """
    from filelock import Timeout

    lock = _HELD.get(run_dir) or meta_mutex(run_dir, lock_mode or _recorded_lock_mode(run_dir))
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise RunError(f"{run_dir / META_MUTEX}: held for more than {wait_s:g} s by another process") from None
    except OSError as exc:
        raise lock_error(run_dir / META_MUTEX, exc) from None
    outer = run_dir not in _HELD
    _HELD[run_dir] = lock
    try:
        yield
    finally:
        if outer:
            del _HELD[run_dir]
        lock.release()


def meta_mutex(run_dir: Path, lock_mode: str = "fcntl") -> BaseFileLock:
    """The short-lived lock behind every check-and-set on a run's metadata.

    A singleton per path so that the holder can update the metadata it guards (flock
    locks belong to an open file: a second instance in the same process would wait on
    itself). Group-writable so that a colleague sharing the data root can take it too.
    ``lock_mode`` "soft" uses a marker file instead, for filesystems without fcntl locks.
    """
    return file_lock(run_dir / META_MUTEX, lock_mode, singleton=True)


def _recorded_lock_mode(run_dir: Path) -> str:
    try:
        meta = read_meta(run_dir)
    except RunError:
        return "fcntl"
    return meta.lock_mode if meta is not None else "fcntl"


def one_seed_run(model_dir: Path) -> int | None:
    """The seed of the run trained in ``<model>/`` itself, before its sweep listed several seeds; ``None``: none.

    A sweep that moves from one seed to several keeps that run as the seed it trained with, instead of
    training that seed again in ``<model>/seed<k>/`` inside it (one training would then be counted twice).
    A run without a recorded seed trained with the template's default, 0.
    """
    try:
        meta = read_meta(model_dir)
    except ProveJobsError:
        return None  # unreadable: status says so; the seed folders are the sweep's as usual
    if meta is None:
        return None
    return meta.seed if meta.seed is not None else 0
