"""A diverged training stops: a loss that stays non-finite (NaN, inf) ends it within a few iterations.

The rule (:class:`Streak`) and the words it records are plain Python: ``status``, the report and
``resubmit`` read them without torch or mmengine. Only :func:`divergence_hook` imports mmengine, in the job.

Why ``NON_FINITE_STREAK = 3`` losses in a row and not the first: once the weights are NaN every later
loss is NaN too, so a real divergence reaches 3 in 3 iterations (seconds of a GPU); a single non-finite
loss the training recovers from (mixed precision's loss scaler skips that step and the weights stay as
they were) does not stop a run that would have gone on fine.

The loss is read where mmengine already turned it into a Python float: ``RuntimeInfoHook`` (priority
VERY_HIGH) calls ``.item()`` on every entry of the train step's outputs each iteration, into the message
hub. This hook reads that float: no second device sync, no tensor touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

NON_FINITE_STREAK = 3
PREFIX = "diverged at iteration "
FORCE_FLAG = "--force-diverged"
# After LoggerHook (BELOW_NORMAL: the stopping iteration's loss is in the logs), before CheckpointHook
# (VERY_LOW: no checkpoint is saved at the iteration that stops, nor at the end of the training it ends).
PRIORITY = "LOW"


class TrainingDiverged(Exception):
    """The training's loss was non-finite for :data:`NON_FINITE_STREAK` iterations in a row."""

    def __init__(self, first: int, stopped: int, loss: float, streak: int) -> None:
        self.first, self.stopped, self.loss, self.streak = first, stopped, loss, streak
        super().__init__(f"{PREFIX}{first} (loss {loss}); stopped at iteration {stopped} after {streak} "
                         "non-finite losses in a row")


def is_diverged(error: str | None) -> bool:
    """Whether a recorded error (``prove_run.json``'s) is this module's."""
    return bool(error) and str(error).startswith(PREFIX)


def resubmit_refusal(error: str, options: str = "") -> str:
    """Why ``resubmit --failed`` leaves a diverged run alone, and how to submit it anyway."""
    where = f" {options}" if options else ""
    return (f"{error.splitlines()[0]}: not resubmitted (it would resume from its last checkpoint and likely diverge "
            f"again); lower its LR in the variant, then `prove-jobs resubmit SWEEP{where} --failed {FORCE_FLAG}`")


@dataclass
class Streak:
    """Non-finite losses seen in a row; :meth:`see` raises :class:`TrainingDiverged` at the ``limit``-th."""

    limit: int = NON_FINITE_STREAK
    count: int = 0
    first: int = 0  # the iteration the streak began at
    first_loss: float = math.nan

    def see(self, iteration: int, loss: float) -> None:
        if math.isfinite(loss):
            self.count = 0
            return
        if self.count == 0:
            self.first, self.first_loss = iteration, loss
        self.count += 1
        if self.count >= self.limit:
            raise TrainingDiverged(self.first, iteration, self.first_loss, self.count)


def current_loss(runner: Any, outputs: Any) -> float | None:
    """This iteration's total loss as a float: the message hub's (already a float), else the outputs' (a sync)."""
    buffer = runner.message_hub.log_scalars.get("train/loss")
    if buffer is not None:
        return float(buffer.current())
    value = outputs.get("loss") if isinstance(outputs, dict) else None
    return None if value is None else float(value)


def divergence_hook(limit: int = NON_FINITE_STREAK) -> Any:
    """An mmengine hook that raises :class:`TrainingDiverged` after ``limit`` non-finite losses in a row.

    Registered by the payload on the rank that speaks for the run (rank 0): once one rank's loss is NaN
    the averaged gradients make every rank's weights NaN, so rank 0 sees it at most an iteration later;
    its exit ends the others (``srun --kill-on-bad-exit``) instead of a rank alone leaving rank 0 waiting.
    """
    from mmengine.hooks import Hook

    class StopOnDivergence(Hook):  # type: ignore[misc]
        priority = PRIORITY

        def __init__(self) -> None:
            self.streak = Streak(limit)

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            loss = current_loss(runner, outputs)
            if loss is not None:
                self.streak.see(int(runner.iter) + 1, loss)  # mmengine logs iteration runner.iter + 1

    return StopOnDivergence()
