"""Rich renderings of a plan and of run statuses (no I/O: callers print them)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from prove_jobs.runs import Run
from prove_jobs.spec import OPTIMIZER, SCHEDULER, Sweep
from prove_jobs.status import RunState, RunStatus

ICONS = {
    RunState.NOT_SUBMITTED: "·",
    RunState.PENDING: "⏳",
    RunState.RUNNING: "🔄",
    RunState.COMPLETED: "✅",
    RunState.FAILED: "❌",
    RunState.CANCELLED: "⛔",
    RunState.TIMEOUT: "⌛",
}
STYLES = {
    RunState.COMPLETED: "green",
    RunState.RUNNING: "cyan",
    RunState.PENDING: "yellow",
    RunState.FAILED: "red",
    RunState.CANCELLED: "magenta",
    RunState.TIMEOUT: "red",
}


def plan_rows(sweep: Sweep, runs: Sequence[Run]) -> list[dict[str, object]]:
    rows = []
    for run in runs:
        v = sweep.variant(run.variant)
        rows.append(
            {
                "model": run.model,
                "variant": run.variant,
                "run_dir": str(run.run_dir),
                "max_iters": v.max_iters,
                "batch_size": v.batch_size,
                "total_samples": v.total_samples,
                "gradient_steps": v.gradient_steps,
                "crop_size": list(v.crop_size),
                "optimizer": OPTIMIZER,
                "base_lr": v.lr,
                "lr_rule": v.lr_rule,
                "warmup_iters": v.warmup_iters,
                "scheduler": SCHEDULER,
                "val_interval": v.val_interval,
                "checkpoint_interval": v.checkpoint_interval,
            }
        )
    return rows


def plan_table(sweep: Sweep, runs: Sequence[Run]) -> Table:
    table = Table(title=f"Sweep {sweep.name}: {len(runs)} run(s) under {sweep.data_root}", title_justify="left")
    for header in ("Variant", "Model", "Iterations", "Batch", "Total samples", "Gradient steps", "Crop",
                   "Optimizer", "Base LR", "Warmup", "Scheduler", "Val interval", "Run dir"):
        numeric = header in {"Iterations", "Batch", "Total samples", "Gradient steps", "Base LR", "Warmup",
                             "Val interval"}
        table.add_column(header, justify="right" if numeric else "left", overflow="fold")
    for row in plan_rows(sweep, runs):
        crop = row["crop_size"]
        assert isinstance(crop, list)
        table.add_row(
            str(row["variant"]), str(row["model"]), f"{row['max_iters']:,}", str(row["batch_size"]),
            f"{row['total_samples']:,}", f"{row['gradient_steps']:,}", f"{crop[0]}×{crop[1]}",
            str(row["optimizer"]), f"{row['base_lr']:g}", str(row["warmup_iters"]), str(row["scheduler"]),
            f"{row['val_interval']:,}", str(row["run_dir"]),
        )
    return table


def state_text(status: RunStatus) -> Text:
    """The report's wording: ``Running @ 2500/20000``, ``Completed``, ..."""
    label = status.state.value.capitalize()
    if status.state is RunState.RUNNING and status.iter is not None:
        label += f" @ {status.iter}/{status.max_iters or '?'}"
    return Text(f"{ICONS[status.state]} {label}", style=STYLES.get(status.state, ""))


def status_table(statuses: Sequence[RunStatus], *, title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    for header in ("Variant", "Model", "State", "Iter", "Last mIoU", "Last aAcc", "Best mIoU", "Elapsed",
                   "Job", "User"):
        table.add_column(header, justify="right" if header in {"Iter", "Elapsed"} or "IoU" in header
                         or "aAcc" in header else "left")
    for s in statuses:
        last, best = s.last_val, s.best_val
        table.add_row(
            s.run.variant,
            s.run.model,
            state_text(s),
            f"{s.iter if s.iter is not None else '-'}/{s.max_iters or '?'}",
            _pct(last.miou if last else None, last.iter if last else None),
            _pct(last.aacc if last else None, None),
            _pct(best.miou if best else None, best.iter if best else None),
            _duration(s.elapsed_s),
            s.job_id or "-",
            s.user or "-",
        )
    return table


def _pct(value: float | None, at: int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}%" + (f" @{at}" if at is not None else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"
