"""The report's plots: validation mIoU against iteration (matplotlib, the optional ``report`` extra).

One PNG per variant (every model on it) and one per model (every variant on it: what a seed
study compares). A variant trained with several seeds is drawn as the mean over its seeds with
a band from the lowest to the highest seed; a run that failed or was cancelled is dashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prove_jobs.errors import ProveJobsError
from prove_jobs.report.build import Report
from prove_jobs.states import RunState
from prove_jobs.status import RunStatus

ENDED = (RunState.FAILED, RunState.CANCELLED, RunState.TIMEOUT, RunState.STOPPED)


@dataclass(frozen=True)
class SeedCurve:
    """The mean validation curve of one (model, variant) over its seeds, with each iteration's min and max."""

    label: str
    iters: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    seeds: int
    ended: bool  # a run of it failed or was cancelled: drawn dashed, named in the legend


def seed_curve(label: str, statuses: Sequence[RunStatus]) -> SeedCurve | None:
    """Mean, min and max at each validated iteration over the runs (seeds) that reached it."""
    by_iter: dict[int, list[float]] = {}
    for status in statuses:
        for point in status.curve:
            if point.miou is not None:
                by_iter.setdefault(point.iter, []).append(point.miou)
    if not by_iter:
        return None
    iters = tuple(sorted(by_iter))
    ended = [s for s in statuses if s.state in ENDED]
    if ended:
        label += " (" + ", ".join(sorted({s.state.value for s in ended})) + ")"
    if len(statuses) > 1:
        label += f" (mean of {len(statuses)} seeds)"
    return SeedCurve(label, iters, tuple(sum(by_iter[i]) / len(by_iter[i]) for i in iters),
                     tuple(min(by_iter[i]) for i in iters), tuple(max(by_iter[i]) for i in iters),
                     len(statuses), bool(ended))


def write_plots(report: Report, folder: Path) -> dict[str, Path]:
    """One PNG per variant with a curve: mIoU vs iteration for every model. Returns variant -> file."""
    written: dict[str, Path] = {}
    for variant in report.variants:
        curves = [c for model in report.models
                  if (c := seed_curve(model, [s for s in report.runs_of(model, variant.name) if s.curve]))]
        if curves:
            written[variant.name] = _draw(curves, f"{report.label(variant)}: validation mIoU", variant.max_iters,
                                          folder / f"{variant.name}.png")
    return written


def write_model_plots(report: Report, folder: Path) -> dict[str, Path]:
    """One PNG per model with every variant's curve on it, against the images seen (iteration x total batch): a
    batch-16 variant's iteration is eight of a batch-2 one's. Iterations where a variant's batch is not one
    number (a model-zoo variant, a root whose recipes are unknown). Returns model -> file."""
    written: dict[str, Path] = {}
    by_samples = all(v.batch_size > 0 and not v.per_model for v in report.variants)
    for model in report.models:
        curves = [_scaled(c, variant.batch_size if by_samples else 1) for variant in report.variants
                  if (c := seed_curve(report.label(variant), [s for s in report.runs_of(model, variant.name)
                                                               if s.curve]))]
        if curves:
            longest = max(v.max_iters * (v.batch_size if by_samples else 1) for v in report.variants)
            written[model] = _draw(curves, f"{model}: validation mIoU per variant", longest,
                                   folder / f"model_{model}.png", xlabel="images seen" if by_samples else "iteration")
    return written


def _scaled(curve: SeedCurve, batch: int) -> SeedCurve:
    return curve if batch == 1 else replace(curve, iters=tuple(i * batch for i in curve.iters))


def _draw(curves: Sequence[SeedCurve], title: str, max_iters: int, path: Path, *, xlabel: str = "iteration") -> Path:
    plt, integer_ticks = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for curve in curves:
        line, = axes.plot(curve.iters, curve.mean, marker="o", markersize=3, label=curve.label,
                          linestyle="--" if curve.ended else "-")
        if curve.seeds > 1:
            axes.fill_between(curve.iters, curve.low, curve.high, color=line.get_color(), alpha=0.18, linewidth=0)
    if any(curve.seeds > 1 for curve in curves):
        axes.fill_between([], [], [], color="grey", alpha=0.18, linewidth=0, label="band: lowest to highest seed")
    axes.set_title(title)
    axes.xaxis.set_major_locator(integer_ticks(integer=True))  # iterations, not 2.5k fractions
    axes.set_xlabel(xlabel)
    axes.set_ylabel("mIoU (%)")
    if max_iters:
        axes.set_xlim(0, max_iters * 1.03)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _pyplot() -> tuple[Any, Any]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ProveJobsError("plots need matplotlib: pip install 'prove-jobs[report]' (or leave out --plots)") from None
    return plt, MaxNLocator
