"""Run layout and run metadata.

A run is one (model, variant) of a sweep. Its directory is the mmengine ``work_dir``::

    <data_root>/<VARIANT>/<method>/<dataset>/<model>/          (one seed)
    <data_root>/<VARIANT>/<method>/<dataset>/<model>/seed<k>/  (a variant trained with several seeds)
        prove_run.json        metadata (this module; written atomically)
        prove/model.py        the model template, copied at submit time
        prove/config.py       the variant layer on top of it (what the payload loads)
        <timestamp>/...       what mmengine writes (logs, vis_data)
        iter_N.pth, last_checkpoint

Only what cannot be re-derived is stored: who submitted, where, the job id and the
times the payload saw. Progress and mIoU always come from mmengine's own logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from prove_jobs.errors import ClaimMoved, CorruptMetadata, ProveJobsError, RunError
from prove_jobs.fsafe import atomic_write_text, replace_link

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from filelock import BaseFileLock

META_FILE = "prove_run.json"
META_MUTEX = "prove_run.json.lock"
CONFIG_DIR = "prove"
CONFIG_FILE = "config.py"
MODEL_FILE = "model.py"
# Links to the scheduler's stdout/stderr files of the run's latest job (they live with submitit's pickles).
JOB_STDOUT = "job.out"
JOB_STDERR = "job.err"
# mmengine names the folder of each training start after its start time: <work_dir>/20260203_101010/
START_DIR = re.compile(r"^\d{8}_\d{6}$")
# seed<k>, k as the sweep writes it (f"seed{k}"): ASCII digits, no leading zero, nothing after (`$` let "seed2\n" in)
SEED_DIR = re.compile(r"seed(0|[1-9][0-9]*)", re.ASCII)
SEED_LIKE = re.compile(r"seed\d")  # any digit, anything after: a name one could take for a seed folder
MAX_META_BYTES = 1 << 20  # a prove_run.json is about 1 KB: anything this big is not one
MUTEX_WAIT_S = 120.0  # a metadata update waits this long for another process's (their holds are short)


@dataclass(frozen=True)
class Run:
    """One (model, variant, seed) of a sweep and where it lives on disk."""

    model: str
    variant: str
    method: str
    dataset: str
    data_root: Path
    path: Path | None = None  # a work dir outside the layout (found by `status --root`): where it is
    seed: int | None = None  # one of several seeds of its variant (in seed<k>/); None: the variant has one

    @cached_property  # asked for again and again by every reader of a run: built once
    def run_dir(self) -> Path:
        if self.path is not None:
            return self.path
        model_dir = run_dir_for(self.data_root, self.variant, self.method, self.dataset, self.model)
        return model_dir if self.seed is None else model_dir / f"seed{self.seed}"

    @property
    def name(self) -> str:
        """Readable in squeue and in tables: ``<variant>/<model>``, ``<variant>/<model>/seed<k>``."""
        return f"{self.variant}/{self.model}" + ("" if self.seed is None else f"/seed{self.seed}")

    @property
    def options(self) -> str:
        """``--model M --variant V [--seed K]``: how to name this run to a command."""
        return f"--model {self.model} --variant {self.variant}" + ("" if self.seed is None else f" --seed {self.seed}")

    @property
    def config_file(self) -> Path:
        return self.run_dir / CONFIG_DIR / CONFIG_FILE

    @classmethod
    def from_dir(cls, run_dir: Path) -> Run:
        """The run a work dir laid out as ``<data_root>/<VARIANT>/<method>/<dataset>/<model>[/seed<k>]/`` holds."""
        run_dir = run_dir if isinstance(run_dir, Path) and run_dir.is_absolute() else Path(run_dir).absolute()
        seeded = seed_of_dir(run_dir.name)
        parts = run_dir.parts[:-1] if seeded is not None else run_dir.parts
        if len(parts) < 5:
            raise RunError(f"{run_dir}: not a run dir (<root>/<VARIANT>/<method>/<dataset>/<model>[/seed<k>])")
        variant, method, dataset, model = parts[-4:]
        run = cls(model=model, variant=variant, method=method, dataset=dataset,
                  data_root=run_dir.parents[3 if seeded is None else 4], seed=seeded)
        vars(run)["run_dir"] = run_dir  # what run_dir would build again from the parts (10,000 runs: 0.2 s)
        return run


def model_of_dir(run_dir: Path) -> str:
    """The model a run dir is named after: its own name, or its parent's for a ``seed<k>/`` dir."""
    return run_dir.parent.name if seed_of_dir(run_dir.name) is not None else run_dir.name


def seed_of_dir(name: str) -> int | None:
    """``seed3`` -> 3: the folder of one seed of a variant trained with several (only as prove-jobs names it:
    ``seed01`` and ``seed1\n`` are not seed 1's)."""
    found = SEED_DIR.fullmatch(name)
    return None if found is None else int(found.group(1))  # at most 251 digits (a file name): int() is bounded


def not_a_seed_dir(name: str) -> bool:
    """Is ``name`` like a seed folder (``seed01``, ``seed1\n``, ``seed1 ``) without being one?"""
    return SEED_LIKE.match(name) is not None and seed_of_dir(name) is None


def is_start_dir(name: str) -> bool:
    """Is ``name`` the folder mmengine makes for one training start (``20260203_101010``)?"""
    return START_DIR.match(name) is not None


def run_dir_for(data_root: Path, variant: str, method: str, dataset: str, model: str) -> Path:
    return data_root / variant / method / dataset / model


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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object, path: object = META_FILE) -> RunMeta:
        """Each field checked (``UnreadableValue`` naming the first that does not fit); unknown keys come
        from newer versions of prove-jobs: kept reading, dropped."""
        from prove_jobs.values import meta_fields

        return cls(**meta_fields(data, path))  # type: ignore[arg-type]


def current_user() -> str:
    """The name of the real uid, not ``$USER``: a claim says who holds a run, and the environment is anyone's to set."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry (containers): the uid
        return str(os.getuid())


def current_host() -> str:
    return os.uname().nodename


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


def lock_error(path: Path, exc: OSError) -> RunError:
    """A lock file that cannot be used, in one line that says what to do."""
    if exc.errno == errno.ENOSYS:
        return RunError(f"{path}: this filesystem has no working flock; set [sharing] lock_mode = \"soft\" in the "
                        "sweep file (docs/locks.md)")
    if exc.errno == errno.ELOOP:
        return RunError(f"{path}: a symbolic link where prove-jobs keeps a lock; it never follows one: remove it")
    return RunError(f"{path}: cannot open the lock ({exc.strerror or exc})")


def meta_mutex(run_dir: Path, lock_mode: str = "fcntl") -> BaseFileLock:
    """The short-lived lock behind every check-and-set on a run's metadata.

    A singleton per path so that the holder can update the metadata it guards (flock
    locks belong to an open file: a second instance in the same process would wait on
    itself). Group-writable so that a colleague sharing the data root can take it too.
    ``lock_mode`` "soft" uses a marker file instead, for filesystems without fcntl locks.
    """
    return file_lock(run_dir / META_MUTEX, lock_mode, singleton=True)


def file_lock(path: Path, lock_mode: str, *, singleton: bool = False, timeout_s: float = -1) -> BaseFileLock:
    """filelock's lock for ``path``: ``fcntl`` never falls back to marker files on its own (filelock 4 would,
    on a filesystem without flock: two hosts would then each believe they hold it); ``soft`` says so."""
    from filelock import FileLock, SoftFileLock

    if lock_mode == "soft":
        return SoftFileLock(path, timeout=timeout_s, mode=0o664, is_singleton=singleton)
    if lock_mode != "fcntl":
        raise RunError(f"lock mode {lock_mode!r} is unknown (valid: fcntl, soft)")
    return FileLock(path, timeout=timeout_s, mode=0o664, is_singleton=singleton, fallback_to_soft=False)


def _recorded_lock_mode(run_dir: Path) -> str:
    try:
        meta = read_meta(run_dir)
    except RunError:
        return "fcntl"
    return meta.lock_mode if meta is not None else "fcntl"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/<pid>/stat): with the boot id, who it is."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


def same_process(pid: int | None, start: int | None, boot: str | None) -> bool:
    """Is ``pid`` alive and still the process that was recorded (same start time, same boot)?

    A pid is reused once its process is gone; a record without a start time (older prove-jobs)
    is judged by the pid alone.
    """
    if pid is None or not pid_alive(pid):
        return False
    if boot is not None and boot != boot_id():
        return False
    return start is None or process_start(pid) == start


def pid_alive(pid: int) -> bool:
    """Is a process with this pid alive on this host (zombies count as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: /proc still says whether it is a zombie
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def tail_lines(path: Path, count: int, *, max_bytes: int = 64 * 1024, below: Path | None = None) -> list[str]:
    """The last ``count`` lines of a text file (reading at most its last ``max_bytes``); [] if missing or unreadable.

    ``path`` may be a link (``prove/job.err``: prove-jobs made it), but nothing between ``below`` and it;
    what it leads to must be a regular file, else :class:`~prove_jobs.safe_read.NotReadable` (never a wait).
    """
    from prove_jobs.safe_read import read_tail

    try:
        data, whole = read_tail(path, max_bytes, below=below, follow_last=True)
    except OSError:  # missing, unreadable
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not whole:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines if line.strip()][-count:]


def link_job_logs(run_dir: Path, stdout: Path, stderr: Path) -> None:
    """``prove/job.out`` and ``prove/job.err`` in the run dir point at the latest job's files.

    submitit writes them next to its pickles (one sbatch ``--output`` pattern serves a whole array,
    so they cannot be written into each run dir). The links are relative: a data root mounted
    elsewhere on another host still resolves them. Replaced atomically, never followed.
    """
    for name, target in ((JOB_STDOUT, stdout), (JOB_STDERR, stderr)):
        link = run_dir / CONFIG_DIR / name
        replace_link(link, os.path.relpath(target, link.parent))
