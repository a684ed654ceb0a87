"""Checkpoint at the signal: SLURM's warning (USR2) or a preemption's SIGTERM saves at the next boundary, then requeues.

SLURM warns a job before it stops it: ``--signal=USR2@90`` before the time limit, USR2 (with
``preempt_send_user_signal``) or SIGTERM at a preemption, then ``GraceTime`` seconds, then SIGKILL.
submitit's own handler requeues at once, mid-iteration, and ignores SIGTERM: the run went back to its
last periodic checkpoint, up to ``checkpoint_interval`` iterations trained twice. Here the handler only
notes the signal; :func:`save_at_signal_hook`, at the end of the iteration under way, saves a checkpoint
(on every rank's agreement, rank 0 writing it whole before ``last_checkpoint`` names it), then hands over
to submitit's requeue (its ``max_num_timeout`` count and :meth:`TrainingJob.checkpoint` as before).

A requeue by the job itself also brings back a job whose partition preempts by cancelling
(``PreemptMode=CANCEL``): measured on the test cluster, ``scontrol requeue`` from within the grace time
is accepted and the job starts again. It is accepted as well while a job is being *cancelled* (its
state COMPLETING): so a SIGTERM requeues only while the controller still says RUNNING (a preemption's
grace time), never after a ``scancel``, a time limit or an answer that did not come.

Plain Python at import: only the hook imports mmengine and torch, in the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prove_jobs.errors import SchedulerUnavailable

# From the signal to the iteration boundary. Past it, submitit's requeue runs as it did before (no new
# checkpoint): an iteration, or a validation, longer than this must not outlast SLURM's GraceTime (the
# test cluster's is 10 s; sites give 30 s to a few minutes) nor the 90 s of the time-limit warning.
SAVE_DEADLINE_S = 5.0
# Ranks other than 0 wait this long for the requeue (which stops them) after rank 0 has saved.
FOLLOWER_WAIT_S = 60.0
# After CheckpointHook (VERY_LOW): an iteration it saves at anyway is not saved twice.
PRIORITY = "LOWEST"
SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any]


@dataclass
class SignalWatch:
    """The signals that ask the training to stop, noted by the handler and read at each iteration boundary."""

    job_id: str = ""
    signum: int | None = None  # the first stop signal received
    received_at: float = 0.0
    pid: int = field(default_factory=os.getpid)  # a forked dataloader worker inherits the handler: it ignores it
    submitit_handler: Handler | None = None  # submitit's USR2 handler: records, pickles, requeues, exits

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalWatch]:
        """The handlers in place while training; the previous ones (submitit's) back after it."""
        previous = {signum: signal.getsignal(signum) for signum in (*SIGNALS, signal.SIGALRM)}
        usr2 = previous[signal.SIGUSR2]
        self.submitit_handler = usr2 if callable(usr2) else None
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_deadline)
        try:
            yield self
        finally:
            self.disarm()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @property
    def pending(self) -> bool:
        return self.signum is not None

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid or self.signum is not None:
            return
        self.signum, self.received_at = signum, time.time()
        _say(f"{signal.Signals(signum).name} received: saving a checkpoint at the end of this iteration, then "
             "requeueing")
        signal.setitimer(signal.ITIMER_REAL, SAVE_DEADLINE_S)

    def _on_deadline(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid or self.signum is None:
            return
        _say(f"no iteration ended within {SAVE_DEADLINE_S:g} s of the signal: requeued without a new checkpoint")
        self.requeue(frame)

    def requeue(self, frame: FrameType | None = None) -> None:
        """Hand over to submitit's requeue, unless the job is stopped for good (a SIGTERM not from a preemption)."""
        assert self.signum is not None
        if self.signum == signal.SIGTERM:
            state = job_state(self.job_id)
            if state != "RUNNING":
                _say(f"SIGTERM while the job is {state or 'of unknown state (the controller did not answer)'}: "
                     "cancelled or out of time, not requeued")
                raise SystemExit(0)
        if self.submitit_handler is None:  # not under submitit: nothing can requeue this process
            raise SystemExit(0)
        self.submitit_handler(signal.SIGUSR2, frame)


def job_state(job_id: str) -> str:
    """The controller's word on this job (``RUNNING``, ``COMPLETING``, ...); ``""`` when it cannot say."""
    from prove_jobs.scheduler import call

    if not job_id:
        return ""
    try:
        return call(["squeue", "--noheader", "--jobs", job_id, "--format", "%T"], timeout_s=3.0).strip()
    except SchedulerUnavailable:
        return ""


def stop_is_due(loop: Any, step: int) -> bool:
    """Whether the training may stop after iteration ``step``: not where a validation follows (resuming after it
    would skip that validation, the last one too), so the stop waits for the next boundary."""
    max_iters = getattr(loop, "max_iters", None)
    if max_iters is not None and step >= int(max_iters):
        return False
    if getattr(getattr(loop, "runner", None), "val_loop", None) is None:
        return True
    interval, begin = getattr(loop, "val_interval", None), getattr(loop, "val_begin", 1)
    return not (interval and step >= begin and step % int(interval) == 0)


def save_at_signal_hook(watch: SignalWatch, *, leader: bool) -> Any:
    """An mmengine hook: once a stop signal was noted, the ranks agree on a boundary, rank 0 saves, then requeue."""
    from mmengine.hooks import Hook
    from mmengine.runner import IterBasedTrainLoop

    class SaveAtSignal(Hook):  # type: ignore[misc]
        priority = PRIORITY

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            if not isinstance(runner.train_loop, IterBasedTrainLoop):  # an epoch loop resumes at an epoch's start
                return
            step = int(runner.iter) + 1  # mmengine's count of this iteration (its iter_{step}.pth)
            if not _agreed(watch.pending) or not stop_is_due(runner.train_loop, step):
                return
            watch.disarm()
            if leader:
                saved = save_whole(runner, step)
                _say(f"saved {saved.name} at iteration {step}; the next start resumes at iteration {step + 1}")
            _barrier()
            if leader:
                watch.requeue()
            else:
                time.sleep(FOLLOWER_WAIT_S)  # rank 0's requeue stops this process
                raise SystemExit(0)

    return SaveAtSignal()


def save_whole(runner: Any, step: int) -> Path:
    """``iter_{step}.pth`` written under a temporary name and renamed, then ``last_checkpoint`` pointed at it.

    A kill while saving leaves the previous checkpoint named; a checkpoint CheckpointHook wrote at this
    very iteration is only pointed at again.
    """
    from prove_jobs.fsafe import atomic_write_text
    from prove_jobs.resume import LAST_CHECKPOINT

    work_dir = Path(runner.work_dir)
    final = work_dir / f"iter_{step}.pth"
    if not final.is_file():
        partial = f".iter_{step}.pth.partial"
        # by_epoch=False: the iteration just ended is the one recorded (mmengine's default is the epoch's count)
        runner.save_checkpoint(str(work_dir), partial, save_optimizer=True, save_param_scheduler=True, by_epoch=False)
        with open(work_dir / partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(work_dir / partial, final)
    atomic_write_text(work_dir / LAST_CHECKPOINT, str(final), mode=0o664)
    return final


def _agreed(flag: bool) -> bool:
    """``flag`` on any rank, the same answer on every rank (one small all-reduce per iteration under DDP)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _say(message: str) -> None:
    """In the job's stderr, where a user looks first."""
    sys.stderr.write(f"prove-jobs: {message}\n")
    sys.stderr.flush()
