"""Make REAL mmengine logs for the log parser's tests.

A tiny ``mmengine.runner.Runner`` (pure mmengine + torch, no mmseg) trains a toy model on random
tensors, validates with a metric that reports ``aAcc``/``mIoU``/``mAcc`` (percentages, like mmseg
1.x) and writes exactly what a real mmseg job writes under ``work_dir``.

torch and mmengine are imported only inside the functions here, so test modules that import this
file still collect on a machine without the ``train`` extra (they guard with
``pytest.importorskip``).

The metric values are a pure function of (evaluation count, ``offset``), see :func:`expected_metrics`,
so a test can check that the parsed curve equals what the metric produced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def expected_metrics(eval_index: int, offset: float = 0.0) -> dict[str, float]:
    """What :class:`ToyMetric` reports for its ``eval_index``-th evaluation (1-based) in one start."""
    return {
        "aAcc": round(80.0 + 1.5 * eval_index + offset / 10, 2),
        "mIoU": round(40.0 + 2.25 * eval_index + offset, 2),
        "mAcc": round(50.0 + 1.75 * eval_index + offset / 2, 2),
    }


def _classes() -> dict[str, Any]:
    """Build the toy classes (needs torch + mmengine; defined lazily)."""
    import torch
    from mmengine.evaluator import BaseMetric
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from torch.utils.data import Dataset

    class ToyDataset(Dataset):  # type: ignore[type-arg]
        def __init__(self, size: int = 8) -> None:
            gen = torch.Generator().manual_seed(1234)
            self.x = torch.randn(size, 4, generator=gen)
            self.y = torch.randn(size, 1, generator=gen)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, idx: int) -> dict[str, Any]:
            return {"inputs": self.x[idx], "targets": self.y[idx]}

    class ToyModel(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, inputs: Any, targets: Any = None, mode: str = "tensor") -> Any:
            out = self.linear(inputs)
            if mode == "loss":
                return {"loss": ((out - targets) ** 2).mean()}
            if mode == "predict":
                return [{"pred": o.detach()} for o in out]
            return out

    class ToyMetric(BaseMetric):
        default_prefix = None

        def __init__(self, offset: float = 0.0) -> None:
            super().__init__()
            self.offset = offset
            self.evals = 0

        def process(self, data_batch: Any, data_samples: Any) -> None:
            self.results.extend(float(s["pred"].sum()) for s in data_samples)

        def compute_metrics(self, results: list[Any]) -> dict[str, float]:
            self.evals += 1
            return expected_metrics(self.evals, self.offset)

    class CrashHook(Hook):
        """Raise after the LoggerHook has logged training iteration ``at`` (simulates a job killed then)."""

        priority = "LOWEST"

        def __init__(self, at: int) -> None:
            self.at = at

        def before_train(self, runner: Any) -> None:
            if self.at == 0:
                raise RuntimeError("simulated failed start")

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            if runner.iter + 1 >= self.at:
                raise RuntimeError(f"simulated crash at iteration {self.at}")

    return {
        "ToyDataset": ToyDataset,
        "ToyModel": ToyModel,
        "ToyMetric": ToyMetric,
        "CrashHook": CrashHook,
    }


def _allow_mmengine_checkpoints() -> None:
    """torch>=2.6 loads with weights_only=True: the payload's own allow-list (its restricted getattr included)."""
    from prove_jobs.resume import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()


def _wait_for_new_second() -> None:
    """Each Runner names its dir (and its global logger/visualizer) by the second it starts in."""
    now = time.time()
    time.sleep(1.0 - (now % 1.0) + 0.01)


def run_training(
    work_dir: Path,
    *,
    max_iters: int = 12,
    val_interval: int = 4,
    log_interval: int = 2,
    checkpoint_interval: int = 4,
    log_metric_by_epoch: bool = False,
    resume: bool = False,
    crash_at: int | None = None,
    metric_offset: float = 0.0,
) -> None:
    """One training start of a tiny Runner in this process.

    ``crash_at``: raise after iteration ``crash_at`` was logged (0: fail before training starts).
    The exception is swallowed here: a crashed start is what we want on disk.
    """
    import torch
    from mmengine.runner import Runner

    _allow_mmengine_checkpoints()
    _wait_for_new_second()
    cls = _classes()
    custom_hooks = [cls["CrashHook"](crash_at)] if crash_at is not None else []
    dataset = cls["ToyDataset"](8)
    runner = Runner(
        model=cls["ToyModel"](),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset,
            sampler=dict(type="InfiniteSampler", shuffle=True),
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type="default_collate"),
        ),
        val_dataloader=dict(
            dataset=cls["ToyDataset"](4),
            sampler=dict(type="DefaultSampler", shuffle=False),
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type="default_collate"),
        ),
        val_evaluator=[cls["ToyMetric"](metric_offset)],
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        param_scheduler=[dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=val_interval),
        val_cfg=dict(),
        default_hooks=dict(
            logger=dict(type="LoggerHook", interval=log_interval, log_metric_by_epoch=log_metric_by_epoch),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=checkpoint_interval),
        ),
        custom_hooks=custom_hooks,
        log_processor=dict(by_epoch=False),
        resume=resume,
        randomness=dict(seed=0),
        default_scope="mmengine",
    )
    try:
        runner.train()
    except RuntimeError as exc:
        if "simulated" not in str(exc):
            raise
    finally:
        _close_log_handlers()
    del torch


def run_test(work_dir: Path, *, metric_offset: float = 7.0) -> None:
    """A ``Runner.test()`` start: writes ``<ts>/<ts>.json`` OUTSIDE vis_data (must not count as training)."""
    from mmengine.runner import Runner

    _allow_mmengine_checkpoints()
    _wait_for_new_second()
    cls = _classes()
    runner = Runner(
        model=cls["ToyModel"](),
        work_dir=str(work_dir),
        test_dataloader=dict(
            dataset=cls["ToyDataset"](4),
            sampler=dict(type="DefaultSampler", shuffle=False),
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type="default_collate"),
        ),
        test_evaluator=[cls["ToyMetric"](metric_offset)],
        test_cfg=dict(),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=1)),
        log_processor=dict(by_epoch=False),
        default_scope="mmengine",
    )
    try:
        runner.test()
    finally:
        _close_log_handlers()


def _close_log_handlers() -> None:
    """Flush and close the file handlers of every MMLogger so the files are complete on disk."""
    import logging

    from mmengine.logging import MMLogger

    for logger in list(MMLogger._instance_dict.values()):
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler):
                handler.flush()
                handler.close()
                logger.removeHandler(handler)


def make_resumed_run(work_dir: Path) -> None:
    """Three starts in one work dir: crash at 11 (last checkpoint 8), a failed start, then a resume.

    Start 1 (offset 0): train 1..11, val at 2,4,6,8,10; checkpoints 4, 8; crashes after logging 11.
    Start 2: fails before training (only the .log and config are left).
    Start 3 (offset 50): resumes from iter_8.pth, trains 9..16, val at 10,12,14,16.
    Iteration 10's val and train records 10 (log interval 2) appear in starts 1 and 3: start 3 wins.
    """
    common: dict[str, Any] = dict(max_iters=16, val_interval=2, log_interval=2, checkpoint_interval=4)
    run_training(work_dir, crash_at=11, **common)
    run_training(work_dir, crash_at=0, resume=True, **common)
    run_training(work_dir, resume=True, metric_offset=50.0, **common)


def run_console_subprocess(work_dir: Path, stdout_path: Path, *, force_color: bool = True) -> int:
    """Train in a subprocess with its stdout in a file, like a job's stdout (console format, colours)."""
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    if force_color:
        env["FORCE_COLOR"] = "1"
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
        "from mmengine_logs import run_training; run_training(Path(sys.argv[1]), max_iters=8, val_interval=4)"
    )
    with stdout_path.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(work_dir), str(Path(__file__).resolve().parent)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=120,
            check=False,
        )
    return proc.returncode


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/mmengine_logs.py DIR
    target = Path(sys.argv[1])
    run_training(target / "by_iter")
    run_training(target / "by_epoch", log_metric_by_epoch=True)
    make_resumed_run(target / "resumed")
    run_test(target / "test_run")
