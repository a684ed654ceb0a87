"""Rich renderings of a plan and of run statuses (no I/O: callers print them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from prove_jobs.report import configuration_rows
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
    RunState.LOCK_CONFLICT: "⏳",
}
STYLES = {
    RunState.COMPLETED: "green",
    RunState.RUNNING: "cyan",
    RunState.PENDING: "yellow",
    RunState.FAILED: "red",
    RunState.CANCELLED: "magenta",
    RunState.TIMEOUT: "red",
    RunState.LOCK_CONFLICT: "yellow",
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


def plan_tables(sweep: Sweep, runs: Sequence[Run]) -> Group:
    """The report's "Training Configurations" table (parameters x variants), then the runs and their dirs."""
    variants = [sweep.variant(name) for name in dict.fromkeys(run.variant for run in runs)]
    config = Table(title="Training configurations", title_justify="left")
    config.add_column("Parameter", style="bold")
    for variant in variants:
        config.add_column(variant.name, justify="right", overflow="fold")
    for label, cells in configuration_rows(variants):
        config.add_row(label, *cells)

    listing = Table(title=f"{len(runs)} run(s) of sweep {sweep.name}, under {sweep.data_root}", title_justify="left")
    # The relative dir names variant and model (<VARIANT>/<method>/<dataset>/<model>): no separate columns.
    listing.add_column("Run dir", overflow="fold")
    for run in runs:
        listing.add_row(_relative(run.run_dir, sweep.data_root))
    return Group(config, Text(""), listing)


def _relative(path: Path, root: Path) -> str:
    """Run dirs below the title's root, shortened to the part that differs between runs."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def state_text(status: RunStatus) -> Text:
    """The report's wording: ``Running @ 2500/20000``, ``Completed``, ..."""
    label = status.state.value.capitalize()
    holder = status.lock_holder
    if status.state is RunState.LOCK_CONFLICT and holder is not None:
        label += f" ({holder.user}{', released' if holder.stale else ''})"
    elif status.state is not RunState.COMPLETED and status.iter is not None:
        label += f" @ {status.iter}/{status.max_iters or '?'}"
    if status.state is not RunState.LOCK_CONFLICT and holder is not None and holder.stale:
        label += " (stale lock)"
    return Text(f"{ICONS[status.state]} {label}", style=STYLES.get(status.state, ""))


def status_tables(statuses: Sequence[RunStatus], *, title: str = "") -> Group:
    """One table per variant, as the report's Status section groups runs."""
    by_variant: dict[str, list[RunStatus]] = {}
    for status in statuses:
        by_variant.setdefault(status.run.variant, []).append(status)
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    for variant, group in by_variant.items():
        parts.append(status_table(group, title=f"{variant} (mIoU, aAcc: last validation, %)"))
    return Group(*parts)


def status_table(statuses: Sequence[RunStatus], *, title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # Narrow terminals wrap names and states rather than truncating numbers.
    table.add_column("Model", overflow="fold", min_width=min(22, max((len(s.run.model) for s in statuses), default=5)))
    table.add_column("State")
    for header in ("mIoU", "aAcc", "Best mIoU", "Time"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("Job", overflow="fold")
    table.add_column("User", overflow="fold")
    for s in statuses:
        last, best = s.last_val, s.best_val
        table.add_row(
            s.run.model,
            state_text(s),
            _pct(last.miou if last else None),
            _pct(last.aacc if last else None),
            _pct(best.miou if best else None) + (f" @{best.iter}" if best else ""),
            _duration(s.elapsed_s),
            s.job_id or "-",
            s.user or "-",
        )
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"
