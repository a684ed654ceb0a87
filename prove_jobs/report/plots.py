"""The report's plots: validation mIoU against iteration (matplotlib, the optional ``report`` extra)."""

from __future__ import annotations

from pathlib import Path

from prove_jobs.errors import ProveJobsError
from prove_jobs.plan import variant_label
from prove_jobs.report import Report
from prove_jobs.states import RunState


def write_plots(report: Report, folder: Path) -> dict[str, Path]:
    """One PNG per variant with a curve: mIoU vs iteration for every model. Returns variant -> file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ProveJobsError("plots need matplotlib: pip install 'prove-jobs[report]' (or leave out --plots)") from None
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for variant in report.variants:
        group = [s for s in report.statuses if s.run.variant == variant.name and s.curve]
        if not group:
            continue
        figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
        for status in group:
            points = [(p.iter, p.miou) for p in status.curve if p.miou is not None]
            ended = status.state in (RunState.FAILED, RunState.CANCELLED, RunState.TIMEOUT, RunState.STOPPED)
            label = status.run.model + (f" ({status.state.value})" if ended else "")
            axes.plot([i for i, _ in points], [m for _, m in points], marker="o", markersize=3, label=label,
                      linestyle="--" if ended else "-")
        axes.set_title(f"{variant_label(variant)}: validation mIoU")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations, not 2.5k fractions
        axes.set_xlabel("iteration")
        axes.set_ylabel("mIoU (%)")
        axes.set_xlim(0, variant.max_iters * 1.03)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = folder / f"{variant.name}.png"
        figure.savefig(path)
        plt.close(figure)
        written[variant.name] = path
    return written
