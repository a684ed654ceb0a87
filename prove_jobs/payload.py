"""What runs inside a job: train one run's config with mmengine, resuming where it stopped.

The only module that touches torch, mmengine and mmsegmentation, and only inside functions:
the login node imports this module (to pickle :class:`TrainingJob` for submitit) without them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE, current_host, now, read_meta, update_meta

if TYPE_CHECKING:
    from submitit.helpers import DelayedSubmission

LAST_CHECKPOINT = "last_checkpoint"


def train(config_file: Path, work_dir: Path, *, threads: int | None = None) -> int:
    """Train ``config_file`` in ``work_dir``, resuming from its last checkpoint; returns the final iteration.

    mmengine writes the absolute checkpoint path into ``work_dir/last_checkpoint``: resuming works
    because runs are never moved (a copied run dir would resume from the original's checkpoint).
    """
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from prove_jobs import _mmcv_shim

    _mmcv_shim.install()
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _allow_mmengine_checkpoints()
    if threads is not None:
        torch.set_num_threads(threads)

    cfg = Config.fromfile(str(config_file))
    cfg.work_dir = str(work_dir)
    if (work_dir / LAST_CHECKPOINT).is_file():
        # resume=True with load_from=None: mmengine finds the checkpoint named in last_checkpoint.
        cfg.resume = True
        cfg.load_from = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    return int(runner.iter)


def _allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (the default since torch 2.6) read mmengine's checkpoints.

    mmengine 0.10.7 resumes with a plain ``torch.load``; its checkpoints pickle the message hub's
    log history: HistoryBuffer objects holding numpy arrays and scalars, and a dict of its bound
    classmethods, pickled as ``getattr(HistoryBuffer, 'min')``. We allow exactly those globals
    (found by resuming real checkpoints until no "Unsupported global" was left) rather than
    turning the check off for every load (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD). ``getattr`` only
    fetches attributes: the unpickler still calls nothing outside the allow-list.
    """
    import builtins

    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]

    torch.serialization.add_safe_globals(
        [HistoryBuffer, builtins.getattr, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
        # numpy >= 1.25 builds each dtype as its own class; float64 and int64 are in every
        # mid-run checkpoint, float32 and int32 are harmless insurance.
        + [type(np.dtype(code)) for code in ("f8", "i8", "f4", "i4")]
    )


@dataclass(frozen=True)
class TrainingJob:
    """The submitit callable for one run; picklable, holds only plain values (the run dir as a str)."""

    run_dir: str
    threads: int | None = None
    lock_mode: str = "fcntl"
    umask: int = 0o002

    def __call__(self) -> str:
        from prove_jobs.errors import LockConflict
        from prove_jobs.locks import training_lock

        # Everything this job writes (mmengine's logs, checkpoints, last_checkpoint) stays
        # writable by the group: a colleague may have to resume this run.
        os.umask(self.umask)
        # `prove-jobs cancel` stops local jobs with SIGINT; a job submitted from a background
        # shell (`prove-jobs submit ... &`) would otherwise inherit SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        run_dir = Path(self.run_dir)
        try:
            with training_lock(run_dir, self.lock_mode):
                return self._train(run_dir)
        except LockConflict as exc:
            update_meta(run_dir, failed_at=now(), error=f"lock conflict: {exc}"[:500])
            raise

    def _train(self, run_dir: Path) -> str:
        meta = read_meta(run_dir)
        attempts = meta.attempts if meta is not None else 0
        job_id = _scheduler_job_id() or (meta.job_id if meta is not None else None)
        meta = update_meta(
            run_dir,
            started_at=now(),
            pid=os.getpid(),
            host=current_host(),
            attempts=attempts + 1,
            job_id=job_id,
            failed_at=None,
            error=None,
        )
        try:
            final_iter = train(run_dir / CONFIG_DIR / CONFIG_FILE, run_dir, threads=self.threads)
        except Exception as exc:  # not SystemExit: submitit exits that way after requeueing a preempted job
            update_meta(run_dir, failed_at=now(), error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        update_meta(run_dir, finished_at=now())
        return f"completed {meta.variant}/{meta.model} at iter {final_iter}"

    def checkpoint(self) -> DelayedSubmission:
        """Called by submitit on preemption or timeout: requeue the same run; it resumes."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainingJob(self.run_dir, self.threads, self.lock_mode, self.umask))


def _scheduler_job_id() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or None
