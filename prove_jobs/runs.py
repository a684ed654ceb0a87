"""Run layout and run metadata.

A run is one (model, variant) of a sweep. Its directory is the mmengine ``work_dir``::

    <data_root>/<VARIANT>/<method>/<dataset>/<model>/
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
import json
import os
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from prove_jobs.errors import CorruptMetadata, RunError
from prove_jobs.fsafe import atomic_write_text

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
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


@dataclass(frozen=True)
class Run:
    """One (model, variant) pair of a sweep and where it lives on disk."""

    model: str
    variant: str
    method: str
    dataset: str
    data_root: Path
    path: Path | None = None  # a work dir outside the layout (found by `status --root`): where it is

    @cached_property  # asked for again and again by every reader of a run: built once
    def run_dir(self) -> Path:
        if self.path is not None:
            return self.path
        return run_dir_for(self.data_root, self.variant, self.method, self.dataset, self.model)

    @property
    def name(self) -> str:
        """Readable in squeue and in tables: ``<variant>/<model>``."""
        return f"{self.variant}/{self.model}"

    @property
    def config_file(self) -> Path:
        return self.run_dir / CONFIG_DIR / CONFIG_FILE

    @classmethod
    def from_dir(cls, run_dir: Path) -> Run:
        """The run a work dir laid out as ``<data_root>/<VARIANT>/<method>/<dataset>/<model>/`` holds."""
        run_dir = Path(run_dir).absolute()
        if len(run_dir.parts) < 5:
            raise RunError(f"{run_dir}: not a run dir (<root>/<VARIANT>/<method>/<dataset>/<model>)")
        variant, method, dataset, model = run_dir.parts[-4:]
        return cls(model=model, variant=variant, method=method, dataset=dataset, data_root=run_dir.parents[3])


def is_start_dir(name: str) -> bool:
    """Is ``name`` the folder mmengine makes for one training start (``20260203_101010``)?"""
    return START_DIR.match(name) is not None


def run_dir_for(data_root: Path, variant: str, method: str, dataset: str, model: str) -> Path:
    return data_root / variant / method / dataset / model


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
    released_at: float | None = None  # the claim was cleared by `prove-jobs unlock`
    released_by: str | None = None
    error: str | None = None
    max_iters: int | None = None
    attempts: int = 0  # trainings started in this run dir, over all submissions
    restarts: int = 0  # trainings started again within the last submission (requeue after preemption or time limit)
    requeued_at: float | None = None  # the job was stopped and asked to be requeued; cleared when it starts again
    lock_mode: str = "fcntl"  # the sweep's sharing.lock_mode: every lock on this run dir uses it

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        # Unknown keys come from newer versions of prove-jobs: keep reading, drop them.
        return cls(**{k: v for k, v in data.items() if k in known})


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
    """The run's metadata, or ``None`` for a run dir prove-jobs never wrote to."""
    path = meta_path(run_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunError(f"{path}: cannot read run metadata ({exc.strerror})") from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return RunMeta.from_json(data)
    except (ValueError, TypeError) as exc:
        raise CorruptMetadata(f"{path}: corrupt run metadata ({exc}); move it aside to reset the run") from exc


def write_meta(run_dir: Path, meta: RunMeta) -> RunMeta:
    atomic_write_text(meta_path(run_dir), json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n")
    return meta


def update_meta(run_dir: Path, **changes: Any) -> RunMeta:
    """Read, change and atomically rewrite the metadata of a run prove-jobs submitted.

    Serialised by a short-lived lock: ``submit`` records the job id while a local job may
    already be recording its start, and neither write may be lost.
    """
    with meta_mutex(run_dir, _recorded_lock_mode(run_dir)):
        meta = read_meta(run_dir)
        if meta is None:
            raise RunError(f"{meta_path(run_dir)}: no run metadata; submit the run with prove-jobs first")
        return write_meta(run_dir, dataclasses.replace(meta, **changes))


def meta_mutex(run_dir: Path, lock_mode: str = "fcntl", timeout_s: float = 120) -> BaseFileLock:
    """The short-lived lock behind every check-and-set on a run's metadata.

    A singleton per path so that the holder can update the metadata it guards (flock
    locks belong to an open file: a second instance in the same process would wait on
    itself). Group-writable so that a colleague sharing the data root can take it too.
    ``lock_mode`` "soft" uses a marker file instead, for filesystems without fcntl locks.
    """
    from filelock import FileLock, SoftFileLock

    cls = SoftFileLock if lock_mode == "soft" else FileLock
    return cls(run_dir / META_MUTEX, timeout=timeout_s, mode=0o664, is_singleton=True)


def _recorded_lock_mode(run_dir: Path) -> str:
    try:
        meta = read_meta(run_dir)
    except RunError:
        return "fcntl"
    return meta.lock_mode if meta is not None else "fcntl"


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


def tail_lines(path: Path, count: int, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` lines of a text file (reading at most its last ``max_bytes``); [] if unreadable."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines if line.strip()][-count:]


def link_job_logs(run_dir: Path, stdout: Path, stderr: Path) -> None:
    """``prove/job.out`` and ``prove/job.err`` in the run dir point at the latest job's files.

    submitit writes them next to its pickles (one sbatch ``--output`` pattern serves a whole array,
    so they cannot be written into each run dir). The links are relative: a data root mounted
    elsewhere on another host still resolves them.
    """
    for name, target in ((JOB_STDOUT, stdout), (JOB_STDERR, stderr)):
        link = run_dir / CONFIG_DIR / name
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(target, link.parent))
        tmp.replace(link)  # atomic: a reader sees the old link or the new one
