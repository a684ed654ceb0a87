"""Rich renderings of a plan and of run statuses (no I/O: callers print them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from prove_jobs.divergence import is_diverged
from prove_jobs.escape import visible
from prove_jobs.gpu_hours import gpu_hours_line
from prove_jobs.plan import RESOURCE_HEADERS, configuration_rows, model_rows, resources_cells, sweep_rows
from prove_jobs.runs import Run
from prove_jobs.spec import Sweep
from prove_jobs.states import RunState
from prove_jobs.status import RunStatus

STYLES = {
    RunState.COMPLETED: "green",
    RunState.RUNNING: "cyan",
    RunState.STARTING: "cyan",
    RunState.STOPPED: "magenta",
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
    seeds = {name: sweep.seeds_for(name) for name in (v.name for v in variants)}
    config = Table(title="Training configurations", title_justify="left")
    config.add_column("Parameter", style="bold")
    for variant in variants:
        config.add_column(variant.name, justify="right", overflow="fold")
    for label, cells in configuration_rows(variants) + sweep_rows(sweep, variants, runs):
        config.add_row(label, *cells)
    config.add_row("Seeds", *(", ".join(map(str, seeds[v.name])) for v in variants))
    names, rows = model_rows(sweep, runs)
    models = Table(title="Models", title_justify="left")
    for name in names:
        models.add_column(name, overflow="fold")
    for row in rows:
        models.add_row(*row)

    listing = Table(title=f"{len(runs)} run(s) of sweep {sweep.name}, under {sweep.data_root}", title_justify="left")
    # The relative dir names variant, model and seed (<VARIANT>/<method>/<dataset>/<model>[/seed<k>]): no
    # separate columns for them.
    listing.add_column("Run dir", overflow="fold")
    for header in RESOURCE_HEADERS:
        listing.add_column(header, justify="right")
    for run in runs:
        listing.add_row(_relative(run.run_dir, sweep.data_root),
                        *resources_cells(sweep.resources_for(run), sweep.recipe(run).batch_size))
    return Group(config, Text(""), models, Text(""), listing)


def _relative(path: Path, root: Path) -> str:
    """Run dirs below the title's root, shortened to the part that differs between runs."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def state_text(status: RunStatus) -> Text:
    """The report's wording: ``Running @ 2500/20000`` (an epoch loop: ``Running @ ep 3/12``), ``Completed``, ..."""
    label = status.state.value.capitalize()
    holder = status.lock_holder
    if status.state is RunState.LOCK_CONFLICT and holder is not None:
        label += f" ({holder.user}{', released' if holder.stale else ''})"
    elif status.pending_reason:
        label += f" ({status.pending_reason})"  # squeue's why: Priority, Resources, Dependency...
    elif status.state is not RunState.COMPLETED and status.log is not None and status.log.by_epoch and (
            status.log.epoch is not None):  # an epoch loop: in epochs
        label += f" @ ep {status.log.epoch}/{status.log.max_epochs or '?'}"
    elif status.state is not RunState.COMPLETED and status.iter is not None:
        label += f" @ {status.iter}/{status.max_iters or '?'}"
    if status.restarts and status.state in (RunState.RUNNING, RunState.STARTING, RunState.REQUEUED,
                                            RunState.FAILED, RunState.TIMEOUT):
        label += f" · {status.restarts} restart{'s' if status.restarts > 1 else ''}"
    if status.state is RunState.FAILED and status.meta is not None and is_diverged(status.meta.error):
        label += " · diverged"  # the loss went NaN/inf (prove_jobs.divergence); `status RUN_DIR` says where
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
    total = gpu_hours_line(statuses)
    if total:
        parts.append(Text(total))
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
    narrow: Callable[[RunStatus], RenderableType] | None = None  # a shorter cell, when even the kept columns are wide


BAR_WIDTH = 10


def _progress(s: RunStatus) -> RenderableType:
    """A bar of block characters and the percentage: readable at 0 %, in a pipe, and pasted."""
    if not s.max_iters:  # not known (no metadata, and no log says it): how far, of ? (never of 0)
        return "" if s.iter is None else f"{s.iter:,}/?"
    fraction = min(s.iter or 0, s.max_iters) / s.max_iters
    filled = int(fraction * BAR_WIDTH + 0.5)
    style = "green" if s.state is RunState.COMPLETED else "cyan"
    return Text.assemble(("█" * filled, style), ("░" * (BAR_WIDTH - filled), "dim"), f" {fraction * 100:3.0f}%")


def _at(value: float | None, at: int | None) -> str:
    return "-" if value is None else f"{value:.2f}" + (f" @{at}" if at is not None else "")


def _speed(s: RunStatus) -> RenderableType:
    """Seconds per iteration; the share spent waiting for data when that dominates (a loader bottleneck)."""
    seconds = s.log.seconds_per_iter if s.log else None
    if seconds is None or s.state not in (RunState.RUNNING, RunState.STARTING, RunState.REQUEUED):
        return "-"
    train = s.train
    text = f"{seconds:.2f} s/it"
    if train is not None and train.data_time is not None and train.time and train.data_time > train.time / 2:
        return Text(f"{text} (data {train.data_time / train.time:.0%})", style="yellow")
    return text


def _util(s: RunStatus) -> RenderableType:
    """A training run's GPU (or CPU) use at its last efficiency sample; ``idle 42m`` in red once idle (a stuck run)."""
    if s.usage is None:
        return "-"
    return Text(s.usage.cell(), style="bold red") if s.usage.idle else s.usage.cell()


def _job(s: RunStatus) -> str:
    """The job id, and ``· 2x2 GPUs`` for a job of several training processes."""
    layout = s.meta.layout if s.meta else ""
    return f"{s.job_id or '-'} · {layout}" if layout else s.job_id or "-"


def _memory(s: RunStatus) -> str:
    train = s.train
    return "-" if train is None or train.memory_mb is None else f"{train.memory_mb / 1024:.1f} GB"


def _loss(s: RunStatus) -> str:
    train = s.train
    return "-" if train is None or train.loss is None else f"{train.loss:.4g}"


def _lr(s: RunStatus) -> str:
    train = s.train
    return "-" if train is None or train.lr is None else f"{train.lr:.1e}"


# In the order shown; the lowest priority (highest number) goes first when the terminal is narrow:
# Model, State (with its iteration) and mIoU always stay, then ETA, the progress bar, elapsed time, speed, best mIoU.
COLUMNS = [
    _Column("Model", lambda s: s.run.model, 20, 0),
    _Column("Seed", lambda s: "-" if s.seed is None else str(s.seed), 4, 0, "right"),  # as --json: recorded
    _Column("State", state_text, 22, 0),
    _Column("Progress", _progress, BAR_WIDTH + 5, 2),  # after ETA: State already says "@ 490/600"
    _Column("mIoU", lambda s: _at(s.last_val.miou if s.last_val else None, s.last_val.iter if s.last_val else None),
            12, 0, "right", narrow=lambda s: _at(s.last_val.miou if s.last_val else None, None)),
    _Column("ETA", lambda s: _duration(s.eta_s), 8, 1, "right"),
    _Column("Elapsed", lambda s: _duration(s.elapsed_s), 8, 2, "right"),
    _Column("Speed", _speed, 9, 3, "right"),
    _Column("Util", _util, 8, 3, "right"),
    _Column("Best mIoU", lambda s: _at(s.best_val.miou if s.best_val else None,
                                       s.best_val.iter if s.best_val else None), 12, 3, "right"),
    _Column("Job", lambda s: _job(s), 9, 3),
    _Column("aAcc", lambda s: _pct(s.last_val.aacc if s.last_val else None), 6, 4, "right"),
    _Column("Loss", _loss, 7, 4, "right"),
    _Column("Mem", _memory, 7, 5, "right"),
    _Column("User", lambda s: s.user or "-", 8, 5),
    _Column("LR", _lr, 7, 6, "right"),
    _Column("Curve", lambda s: Text(sparkline([p.miou for p in s.curve]), style="cyan"), 12, 6),
    _Column("Node", lambda s: s.node or "-", 8, 7),
]


def _where(status: RunStatus) -> str:
    """The part of a run's folder that tells it from its twin: ``seed0/``, ``<model>/``, or its data root."""
    run_dir = status.run.run_dir
    return f"{run_dir.name}/" if run_dir.name != status.run.model else f"{run_dir.parent.parent.parent.parent.parent}"


def status_table(statuses: Sequence[RunStatus], *, title: str = "", width: int = 200) -> Table:
    """The dashboard table; on a narrow terminal the least important columns are left out whole.

    The caption names what was left out, so that nobody takes a missing column for missing data.
    """
    seeded = any(s.run.seed is not None for s in statuses)  # a Seed column only where a variant has several
    sampled = any(s.usage is not None for s in statuses)  # a Util column only where a run is training now
    columns = [c for c in COLUMNS if (c.header != "Seed" or seeded) and (c.header != "Util" or sampled)]
    cells = {column.header: [column.cell(s) for s in statuses] for column in columns}
    # two rows of one (model, seed) (a one-seed run and a seed folder inside it, two data roots): say where each is
    seen = Counter((s.run.model, s.run.variant, s.seed) for s in statuses)
    cells["Model"] = [f"{cell} ({_where(s)})" if seen[(s.run.model, s.run.variant, s.seed)] > 1 else cell
                      for cell, s in zip(cells["Model"], statuses, strict=True)]
    needed = {column.header: max([len(column.header), *(_cell_width(c) for c in cells[column.header])])
              for column in columns}
    chosen = list(columns)

    def too_wide() -> bool:
        # rich spends 3 cells per column beyond its text (padding either side, a divider) and 1 for the edge
        return sum(needed[c.header] + 3 for c in chosen) + 1 > width

    while too_wide() and any(c.priority > 0 for c in chosen):
        chosen.remove(max(chosen, key=lambda c: (c.priority, columns.index(c))))
    for column in chosen:
        if too_wide() and column.narrow is not None:
            cells[column.header] = [column.narrow(s) for s in statuses]
            needed[column.header] = max([len(column.header), *(_cell_width(c) for c in cells[column.header])])
    hidden = [c.header for c in columns if c not in chosen]
    caption = f"not shown at {width} columns: {', '.join(hidden)} (a wider terminal, or --json)" if hidden else None
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, caption=caption,
                  caption_justify="left", caption_style="dim")
    for column in chosen:
        table.add_column(column.header, justify=column.justify, overflow="fold")
    for index in range(len(statuses)):
        table.add_row(*(cells[column.header][index] for column in chosen))
    return table


def _cell_width(cell: RenderableType) -> int:
    return cell_len(visible(cell.plain if isinstance(cell, Text) else str(cell)))  # as the console shows it


def waiting_line(statuses: Sequence[RunStatus]) -> str:
    """``2 pending · 1 running · 3 ended · slowest: DEMO_REF/demo_fcn_r18_tiny @ 20/40``: ``wait``'s live line."""
    from collections import Counter

    live = (RunState.PENDING, RunState.STARTING, RunState.RUNNING, RunState.REQUEUED)
    counts = Counter("pending" if s.state in (RunState.PENDING, RunState.REQUEUED) else
                     "running" if s.state in live else "ended" for s in statuses)
    parts = [f"{counts[word]} {word}" for word in ("pending", "running", "ended") if counts[word]]
    running = [s for s in statuses if s.state in (RunState.STARTING, RunState.RUNNING) and s.max_iters]
    if running:
        slowest = min(running, key=lambda s: (s.iter or 0) / (s.max_iters or 1))
        at = "?" if slowest.iter is None else slowest.iter
        parts.append(f"slowest: {slowest.run.name} @ {at}/{slowest.max_iters}")
    return " · ".join(parts)


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
          console: Console, show: Callable[[RenderableType], None], aside: Callable[[], str] = str) -> int:
    """Every ``every_s`` seconds until Ctrl-C: on a terminal, redraw the tables in place (rich Live);
    to a file or a pipe, write each frame after the last (``show``), so that the file is a log of it.
    ``aside``: more for the footer (how old the scheduler's answer is)."""
    import time

    from rich.live import Live

    def frame() -> Group:
        statuses, warnings = collect()
        stamp = time.strftime("%H:%M:%S")
        said = aside()
        footer = [Text(f"{stamp} · every {every_s:g} s{' · ' + said if said else ''} · Ctrl-C to quit", style="dim")]
        footer += [Text(f"warning: {w}", style="yellow") for w in warnings[:5]]
        return Group(status_tables(statuses, title=title, width=console.width), *footer)

    try:
        if not console.is_terminal:
            while True:
                show(frame())
                show(Text(""))
                time.sleep(every_s)
        with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(every_s)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0


def watch_json(collect: Callable[[], tuple[Sequence[RunStatus], Sequence[str]]], every_s: float,
               write: Callable[[object], None]) -> int:
    """``--watch --json``: one JSON line (the list ``status --json`` prints) per refresh, until Ctrl-C."""
    import time

    try:
        while True:
            statuses, _warnings = collect()
            write([s.to_json() for s in statuses])
            time.sleep(every_s)
    except KeyboardInterrupt:
        return 0
