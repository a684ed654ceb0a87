"""Rich renderings of a plan and of run statuses (no I/O: callers print them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from prove_jobs.plan import configuration_rows
from prove_jobs.runs import Run
from prove_jobs.spec import Sweep
from prove_jobs.status import RunState, RunStatus

STYLES = {
    RunState.COMPLETED: "green",
    RunState.RUNNING: "cyan",
    RunState.PENDING: "yellow",
    RunState.REQUEUED: "yellow",
    RunState.FAILED: "red",
    RunState.CANCELLED: "magenta",
    RunState.TIMEOUT: "red",
    RunState.LOCK_CONFLICT: "yellow",
}


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
    if status.restarts and status.state in (RunState.RUNNING, RunState.REQUEUED, RunState.FAILED,
                                            RunState.TIMEOUT):
        label += f" · {status.restarts} restart{'s' if status.restarts > 1 else ''}"
    if status.state is not RunState.LOCK_CONFLICT and holder is not None and holder.stale:
        label += " (stale lock)"
    return Text(f"{status.state.icon} {label}", style=STYLES.get(status.state, ""))


def status_tables(statuses: Sequence[RunStatus], *, title: str = "", width: int = 200) -> Group:
    """One table per variant, as the report's Status section groups runs; columns fit ``width``."""
    by_variant: dict[str, list[RunStatus]] = {}
    for status in statuses:
        by_variant.setdefault(status.run.variant, []).append(status)
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    for variant, group in by_variant.items():
        parts.append(status_table(group, title=variant, width=width))
    if not statuses:
        parts.append(Text("no runs match", style="dim"))
    return Group(*parts)


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 12) -> str:
    """The last ``width`` values as block characters, scaled between their own min and max."""
    points = [v for v in values if v is not None][-width:]
    if not points:
        return ""
    low, high = min(points), max(points)
    span = high - low or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in points)


@dataclass(frozen=True)
class _Column:
    """One dashboard column: how to draw a cell, how wide it wants to be, when to leave it out."""

    header: str
    cell: Callable[[RunStatus], RenderableType]
    width: int  # what it needs, for choosing the columns that fit
    priority: int  # lower = dropped last
    justify: JustifyMethod = "left"


def _progress(s: RunStatus) -> RenderableType:
    if not s.max_iters:
        return ""
    done = min(s.iter or 0, s.max_iters)
    return ProgressBar(total=s.max_iters, completed=done, width=10,
                       complete_style="green" if s.state is RunState.COMPLETED else "cyan")


def _at(value: float | None, at: int | None) -> str:
    return "-" if value is None else f"{value:.2f}" + (f" @{at}" if at is not None else "")


COLUMNS = [
    _Column("Model", lambda s: s.run.model, 20, 0),
    _Column("State", state_text, 22, 0),
    _Column("Progress", _progress, 10, 3),
    _Column("mIoU", lambda s: _at(s.last_val.miou if s.last_val else None, s.last_val.iter if s.last_val else None),
            12, 1, "right"),
    _Column("aAcc", lambda s: _pct(s.last_val.aacc if s.last_val else None), 6, 2, "right"),
    _Column("Best mIoU", lambda s: _at(s.best_val.miou if s.best_val else None,
                                       s.best_val.iter if s.best_val else None), 12, 2, "right"),
    _Column("Curve", lambda s: Text(sparkline([p.miou for p in s.curve]), style="cyan"), 12, 5),
    _Column("Elapsed", lambda s: _duration(s.elapsed_s), 8, 3, "right"),
    _Column("ETA", lambda s: _duration(s.eta_s), 8, 4, "right"),
    _Column("Job", lambda s: s.job_id or "-", 9, 2),
    _Column("User", lambda s: s.user or "-", 8, 4),
    _Column("Node", lambda s: s.node or "-", 8, 6),
]


def status_table(statuses: Sequence[RunStatus], *, title: str = "", width: int = 200) -> Table:
    """The dashboard table; on a narrow terminal the least important columns are left out whole."""
    cells = {column.header: [column.cell(s) for s in statuses] for column in COLUMNS}
    needed = {column.header: max([len(column.header), *(_cell_width(c) for c in cells[column.header])])
              for column in COLUMNS}
    chosen = list(COLUMNS)
    # rich spends 3 cells per column beyond its text (padding either side, a divider) and 1 for the edge
    while sum(needed[c.header] + 3 for c in chosen) + 1 > width and any(c.priority > 0 for c in chosen):
        chosen.remove(max(chosen, key=lambda c: (c.priority, COLUMNS.index(c))))
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in chosen:
        table.add_column(column.header, justify=column.justify, overflow="fold")
    for index in range(len(statuses)):
        table.add_row(*(cells[column.header][index] for column in chosen))
    return table


def _cell_width(cell: RenderableType) -> int:
    if isinstance(cell, ProgressBar):
        return cell.width or 10
    return cell_len(cell.plain if isinstance(cell, Text) else str(cell))


def curve_table(status: RunStatus) -> Group:
    """The report's Training Progress table for one run: Iteration | mIoU | aAcc, the final row bold."""
    table = Table(box=box.SIMPLE_HEAD)
    for header in ("Iteration", "mIoU", "aAcc"):
        table.add_column(header, justify="right")
    for index, point in enumerate(status.curve):
        last = index == len(status.curve) - 1 and status.state is RunState.COMPLETED
        table.add_row(f"{point.iter:,}", _pct_sign(point.miou), _pct_sign(point.aacc), style="bold" if last else None)
    if not status.curve:
        table.add_row("-", "no validation yet", "")
    heading = Text.assemble((status.run.name, "bold"), "  ", state_text(status))
    return Group(heading, table)


def _pct_sign(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"


def watch(collect: Callable[[], tuple[Sequence[RunStatus], Sequence[str]]], title: str, every_s: float,
          console: Console) -> int:
    """Redraw the status tables in place every ``every_s`` seconds (rich Live) until Ctrl-C."""
    import time

    from rich.live import Live

    def frame() -> Group:
        statuses, warnings = collect()
        stamp = time.strftime("%H:%M:%S")
        footer = [Text(f"{stamp} · every {every_s:g} s · Ctrl-C to quit", style="dim")]
        footer += [Text(f"warning: {w}", style="yellow") for w in warnings[:5]]
        return Group(status_tables(statuses, title=title, width=console.width), *footer)

    try:
        with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(every_s)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0
