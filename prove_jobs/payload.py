"""What runs inside a job: train one run's config with mmengine, resuming where it stopped.

The only module that touches torch, mmengine and mmsegmentation, and only inside functions:
the login node imports this module (to pickle :class:`TrainingJob` for submitit) without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from prove_jobs import hold
from prove_jobs.distributed import Rank, slurm_rank
from prove_jobs.divergence import divergence_hook
from prove_jobs.errors import ClaimMoved, LockConflict, ProveJobsError, RunError, SchedulerUnavailable
from prove_jobs.job_record import (
    owns,
    record,
    record_end,
    record_start,
    restarts_so_far,
    scheduler_job_id,
    take_over,
)
from prove_jobs.metadata import now, read_meta
from prove_jobs.resume import allow_mmengine_checkpoints, check_checkpoint, resume_point
from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE
from prove_jobs.sampler import sampling
from prove_jobs.save_at_signal import SignalWatch, save_at_signal_hook

if TYPE_CHECKING:
    from collections.abc import Mapping

    from submitit.helpers import DelayedSubmission


# submitit's USR2 handler has SLURM's --signal=USR2@90 before the kill: the requeue record may not
# wait out a colleague's slow metadata update (the default wait is minutes).
SIGNAL_MUTEX_WAIT_S = 10.0
FOLLOWER_WAIT_S = 600.0  # ranks > 0 wait this long for rank 0 to record the start (it checks, then records)


def train(config_file: Path, work_dir: Path, *, threads: int | None = None, rank: Rank | None = None,
          files: Mapping[str, bytes] | None = None) -> int:
    """Train ``config_file`` in ``work_dir``, resuming from its last checkpoint; returns the final iteration.

    ``files``: the rendered files (name: bytes) as the job read and checked them; mmengine loads exactly
    those, from a private copy, not whatever ``config_file`` holds by then.

    mmengine writes the absolute checkpoint path into ``work_dir/last_checkpoint``: resuming works
    because runs are never moved (a copied run dir would resume from the original's checkpoint).
    ``rank``: this process's place among several (DDP); every rank resumes from the same checkpoint.
    """
    import torch

    from prove_jobs.yapf_cache import load_grammar

    load_grammar()  # before mmengine's Config imports yapf: jobs starting together race for its cache
    from mmengine.config import Config
    from mmengine.runner import Runner

    if needs_shim():
        from prove_jobs import mmcv_shim

        mmcv_shim.install()
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    allow_mmengine_checkpoints()
    if threads is not None:
        torch.set_num_threads(threads)

    if files is None:
        cfg = Config.fromfile(str(config_file))
    else:
        from prove_jobs.rendered_check import private_copy

        with private_copy(files) as scratch:
            cfg = Config.fromfile(str(scratch / config_file.name))
    cfg.work_dir = str(work_dir)
    checkpoint = resume_point(work_dir)
    if checkpoint is not None:
        check_checkpoint(checkpoint)  # before the Runner: a refused checkpoint leaves no start behind
        cfg.resume = True
        cfg.load_from = str(checkpoint)
    notes: list[str] = []
    if rank is not None and rank.world_size > 1:
        from prove_jobs.distributed import setup

        notes = setup(cfg, rank)
    runner = Runner.from_cfg(cfg)
    for note in notes:
        runner.logger.info(note)
    leader = rank is None or rank.leader
    if leader:  # rank 0 speaks for the run (prove_jobs.divergence)
        runner.register_hook(divergence_hook())
    with SignalWatch(job_id=os.environ.get("SLURM_JOB_ID", "")).installed() as watch:
        runner.register_hook(save_at_signal_hook(watch, leader=leader))
        runner.train()
    return int(runner.iter)


def needs_shim() -> bool:
    """Whether this process needs :mod:`prove_jobs.mmcv_shim`: mmcv-lite, or setuptools without pkg_resources.

    Decided here, where the job runs, not where it was submitted: a job pickled on a lite login
    node (the shim imported there) trains on full-flavour nodes without it. With full mmcv (its
    compiled ``mmcv._ext`` present) and ``pkg_resources`` available the shim is never imported.
    """
    import importlib.util

    try:
        compiled_ops = importlib.util.find_spec("mmcv._ext") is not None
    except ImportError:  # no mmcv at all: importing mmseg fails on its own, with its own message
        compiled_ops = False
    return not compiled_ops or importlib.util.find_spec("pkg_resources") is None


@dataclass(frozen=True)
class TakeOver:
    """A job queued behind another user's job on the same run (``resubmit --after-holder``)."""

    holder_job_id: str  # the job we waited for: its claim may be taken over
    config_hash: str  # what we would train
    sweep_file: str
    # (name in prove/, text) of what we train: written over the holder's files once the run is ours
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TrainingJob:
    """The submitit callable for one run; picklable, holds only plain values (the run dir as a str).

    ``token`` is the submission's (recorded in the claim by ``submit``): every write this job
    makes to ``prove_run.json`` first checks, under the run's mutex, that the claim is still that
    submission's. A job whose claim moved on (taken over, released, cancelled, submitted again)
    writes nothing, trains nothing, and says why in its own stderr.
    """

    run_dir: str
    threads: int | None = None
    lock_mode: str = "fcntl"
    umask: int = 0o002
    max_restarts: int | None = None  # the sweep's resources.max_requeues; None: no cap
    take_over: TakeOver | None = None
    token: str = ""
    # (path, sha256) of each pretrained checkpoint the run loads, hashed at submit: the weight cache is a
    # shared folder, and a file changed since then is refused before mmengine builds anything
    weights: tuple[tuple[str, str], ...] = ()
    # (name, sha256) of each rendered file in prove/ as this submission wrote it: the folder is group-writable,
    # and a file renamed over one since is refused before mmengine reads it (prove_jobs.rendered_check)
    rendered: tuple[tuple[str, str], ...] = ()

    def __call__(self) -> str:
        from prove_jobs.locks import training_lock

        # Everything this job writes (mmengine's logs, checkpoints, last_checkpoint) stays
        # writable by the group: a colleague may have to resume this run.
        os.umask(self.umask)
        # `prove-jobs cancel` stops local jobs with SIGINT; a job submitted from a background
        # shell (`prove-jobs submit ... &`) would otherwise inherit SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        run_dir = Path(self.run_dir)
        rank = slurm_rank()
        if not rank.leader:
            return self._follow(run_dir, rank)
        try:
            with training_lock(run_dir, self.lock_mode):
                if self.take_over is not None:
                    outcome = self._take_over(run_dir, self.take_over)
                    if outcome is not None:
                        return outcome
                return self._train(run_dir)
        except ClaimMoved as exc:
            return _say(run_dir, str(exc).removeprefix(f"{run_dir}: "))
        except LockConflict as exc:
            if self.take_over is None:
                # our claim (only if it still is): say why the job ended; never write on another's
                with contextlib.suppress(ClaimMoved):
                    record(run_dir, self.token, failed_at=now(), error=f"lock conflict: {exc}"[:500])
            raise

    def _follow(self, run_dir: Path, rank: Rank, wait_s: float = FOLLOWER_WAIT_S) -> str:
        """A rank other than 0: wait for rank 0 to record this start under our token, then train alongside it.

        Rank 0 alone takes the training lock and writes the metadata; the others only read it. A
        start that rank 0 refused (the claim moved on, the requeue cap, a lock conflict) ends them too.
        """
        restarts = restarts_so_far(starts=0)  # SLURM's count: rank 0 records the same one
        deadline = time.monotonic() + wait_s
        while True:
            meta = read_meta(run_dir)
            if meta is None or not owns(meta, self.token) or meta.cancelled_at or meta.released_at:
                return _say(run_dir, f"rank {rank.rank}: the claim is no longer this submission's; not trained")
            if meta.failed_at is not None:
                raise RunError(f"{run_dir}: rank {rank.rank}: rank 0 did not start this training ({meta.error})")
            if meta.started_at is not None and meta.restarts == restarts and meta.requeued_at is None:
                break
            if time.monotonic() > deadline:
                raise RunError(f"{run_dir}: rank {rank.rank}: rank 0 recorded no start within {wait_s:g} s")
            time.sleep(0.5)
        # each rank loads the config and the checkpoint itself, maybe on another node
        files = self._read_rendered(run_dir)
        _check_weights(self.weights)
        final_iter = train(run_dir / CONFIG_DIR / CONFIG_FILE, run_dir, threads=self.threads, rank=rank, files=files)
        return f"rank {rank.rank} of {meta.variant}/{meta.model}: trained to iter {final_iter}"

    def _read_rendered(self, run_dir: Path) -> dict[str, bytes] | None:
        """The rendered files, read once and checked against this job's digests; ``None`` for a job pickled
        by a prove-jobs that recorded none (mmengine then reads the files itself, as it did)."""
        if not self.rendered:
            return None
        from prove_jobs.rendered_check import read_checked

        return read_checked(run_dir / CONFIG_DIR, self.rendered)

    def _take_over(self, run_dir: Path, take: TakeOver) -> str | None:
        """Claim the run the job we waited for held; a message instead when there is nothing to train."""
        outcome = take_over(run_dir, take, token=self.token, lock_mode=self.lock_mode)
        if outcome:
            return _say(run_dir, outcome)
        if outcome is None:  # claimed just now: its logs are linked as submit links a job's
            _link_own_logs(run_dir)
        return None

    def _train(self, run_dir: Path) -> str:
        try:
            files = self._read_rendered(run_dir)  # before anything is recorded as started
            _check_weights(self.weights)  # outside the run's mutex: hashing a large file holds up no writer
        except ProveJobsError as exc:
            record(run_dir, self.token, failed_at=now(), error=str(exc)[:500])
            raise
        meta = record_start(run_dir, self.token, self.max_restarts)
        _name_slurm_job(f"{meta.variant}/{meta.model}")
        start = hold.started(run_dir)  # its submission's first ends may hold the rest (prove_jobs.hold)
        reserve = _reserve_space(run_dir)
        try:
            with sampling(run_dir, cores=self.threads):  # a process beside it: docs/cluster.md, "Efficiency"
                final_iter = train(run_dir / CONFIG_DIR / CONFIG_FILE, run_dir, threads=self.threads,
                                   rank=slurm_rank(), files=files)
        except Exception as exc:  # not SystemExit: submitit exits that way after requeueing a preempted job
            _release(reserve)  # a full disk (the likely cause) still has room for the record
            record_end(run_dir, self.token, exc, self.max_restarts)
            hold.ended(start, self.token)
            raise
        finally:
            _release(reserve)
        record(run_dir, self.token, finished_at=now())
        hold.ended(start, self.token)
        return f"completed {meta.variant}/{meta.model} at iter {final_iter}"

    def checkpoint(self) -> DelayedSubmission:
        """Called by submitit's requeue on preemption or timeout: requeue the same run; it resumes.

        The checkpoint was saved just before, at the end of the iteration the signal arrived in
        (:mod:`prove_jobs.save_at_signal`); past its deadline, the last periodic one is resumed from.
        """
        from submitit.helpers import DelayedSubmission

        run_dir = Path(self.run_dir)
        with contextlib.suppress(ProveJobsError, OSError):  # the requeue matters more than the record
            record(run_dir, self.token, wait_s=SIGNAL_MUTEX_WAIT_S, requeued_at=now())
        try:
            resume = resume_point(run_dir)
        except ProveJobsError:  # a planted last_checkpoint: the requeued job says so when it starts
            resume = None
        # In the job's stderr, where a user looks first: submitit's own lines are only at INFO.
        sys.stderr.write(f"prove-jobs: {run_dir} stopped by the scheduler; requeued, it resumes from "
                         f"{resume.name if resume else 'the start'}\n")
        sys.stderr.flush()
        # A requeued take-over job owns the run by now (its claim carries this token): it trains as any other job.
        return DelayedSubmission(replace(self, take_over=None))


def _check_weights(files: tuple[tuple[str, str], ...]) -> None:
    if files:
        from prove_jobs.weight_cache import check_unchanged

        check_unchanged(files)


RESERVE_FILE = ".space-reserve"
RESERVE_BYTES = 256 * 1024


def _reserve_space(run_dir: Path) -> Path | None:
    """A few blocks kept in ``prove/`` while the job trains, freed before the job records how it ended.

    A training that fills the disk (a checkpoint cut short by ENOSPC) would otherwise leave no room
    for its own ``prove_run.json`` (rewritten through a temp file): the run would read as a job
    that vanished, not as failed with that error. Best effort; never through a link.
    """
    path = run_dir / CONFIG_DIR / RESERVE_FILE
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, bytes(RESERVE_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        return path
    return None


def _release(reserve: Path | None) -> None:
    if reserve is not None:
        with contextlib.suppress(OSError):
            reserve.unlink()


def _say(run_dir: Path, message: str) -> str:
    """Tell the job's stderr (where a user looks first) why it ends without training; the job's result too."""
    sys.stderr.write(f"prove-jobs: {run_dir}: {message}\n")
    sys.stderr.flush()
    return message


def _name_slurm_job(name: str) -> None:
    """Show ``<VARIANT>/<model>`` in squeue for this job.

    The tasks of an array share the array's name while they wait; once a task runs it is a
    job record of its own, and its owner may rename it. Best effort: a name is not worth a failure.
    """
    from prove_jobs.scheduler import call

    if not os.environ.get("SLURM_JOB_ID"):
        return
    # <array>_<task>, not SLURM_JOB_ID: the first task to start may share its id with the array's
    # own record, and renaming that renames the tasks still waiting.
    job_id = scheduler_job_id()
    with contextlib.suppress(SchedulerUnavailable):
        call(["scontrol", "update", f"JobId={job_id}", f"JobName={name}"], timeout_s=10)


def _link_own_logs(run_dir: Path) -> None:
    import submitit

    from prove_jobs.job_logs import link_job_logs

    with contextlib.suppress(RuntimeError, OSError):  # not under submitit, or a read-only run dir
        paths = submitit.JobEnvironment().paths
        link_job_logs(run_dir, paths.stdout, paths.stderr)
