"""An mmengine hook that holds a training at a chosen iteration while a gate file exists.

Tests use it to act on a training at a known point (kill it after its first checkpoint, preempt
it, look at it while it is live) whatever the machine's speed. A model template of a test's
templates copy loads it with ``custom_imports``; the job finds this file through PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class StallWhileGate(Hook):
    """Before the iteration after ``at`` (iteration ``at`` done: its checkpoint saved, its validation logged),
    wait while ``gate`` exists; ``<gate>.reached`` says the training got there. A run resumed from the
    checkpoint at ``at`` holds there again: open the gate before resuming."""

    def __init__(self, at: int, gate: str) -> None:
        self.at = at
        self.gate = gate

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if runner.iter != self.at or not os.path.exists(self.gate):
            return
        with open(f"{self.gate}.reached", "w") as marker:
            marker.write(f"{runner.iter}\n")
        while os.path.exists(self.gate):
            time.sleep(0.05)


@HOOKS.register_module()
class Pace(Hook):
    """Each iteration takes at least ``seconds``: a training still under way when a test signals it, on any machine."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        time.sleep(self.seconds)
