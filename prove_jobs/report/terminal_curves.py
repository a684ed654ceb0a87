"""mIoU-vs-iteration curves drawn as text (plotext, the optional ``report`` extra): for a terminal or a log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from prove_jobs.errors import ProveJobsError
from prove_jobs.escape import visible

TYPE_CHECKING = False  # not typing's: see cli/parser.py
if TYPE_CHECKING:
    from prove_jobs.status import RunStatus

# Bright colours read on dark and light terminals alike; a seventh curve takes the first colour again.
_COLOURS = ("blue+", "red+", "green+", "magenta+", "cyan+", "orange")
# Without colour the lines tell apart by their marker alone; an ended run is drawn with "x" either way.
_PLAIN_MARKERS = ("•", "+", "o", "*", "#", "%")
# plotext's y ticks and their frame take this many columns left of the canvas; the x ticks must fit in the rest.
_Y_AXIS_COLUMNS = 8


@dataclass(frozen=True)
class Curve:
    """One run's validation mIoU (%) by iteration, as one line of the plot.

    ``low``/``high``: the min and max over seeds at each point, drawn as a band around the line, so the spread of
    a variant shows next to its mean. ``ended``: the run failed or was cancelled, so its line stops for good and is
    drawn with another marker (the label already says why, e.g. " (failed)").
    """

    label: str
    points: tuple[tuple[int, float], ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    ended: bool = False

    def __post_init__(self) -> None:
        for name, band in (("low", self.low), ("high", self.high)):
            if band is not None and len(band) != len(self.points):
                raise ValueError(f"{self.label}: {name} has {len(band)} values for {len(self.points)} points")


def integer_ticks(upper: int, room: int) -> list[int]:
    """Ticks 0, s, 2s, ... up to ``upper`` with s = 1, 2 or 5 x 10^k, as many as fit ``room`` columns.

    plotext's own ticks are fractions of the range ("2.5e3"); iterations are counted, so their ticks are whole.
    """
    if upper <= 0:
        return [0]
    fit = max(2, room // (len(str(upper)) + 3))  # a label and at least 3 spaces between neighbours
    step = next(s for s in (m * 10**k for k in range(len(str(upper)) + 1) for m in (1, 2, 5)) if upper // s + 1 <= fit)
    return list(range(0, upper + 1, step))


def draw_curves(
    title: str,
    curves: Sequence[Curve],
    *,
    width: int,
    height: int,
    max_iters: int | None = None,
    colour: bool = True,
) -> str:
    """Every curve overlaid in one ``width`` x ``height`` plot (variants of one model), the legend under it.

    ``max_iters``: the x axis runs to it, so a run still going shows how far it has to go. Bands go under all the
    lines, in braille dots of their curve's colour, so no band hides a line. The legend is ours, under the plot:
    plotext's sits at the top left, on the curves; a curve with no points yet is left out of both. The plot gets
    what the legend leaves of ``height`` (5 rows at least). ``colour=False``: plain text for pipes and tests, each
    curve with its own marker. plotext keeps one global figure: cleared before and after, its size limit reset.
    """
    try:
        import plotext as plt
    except ImportError:
        raise ProveJobsError("terminal curves need plotext: pip install 'prove-jobs[report]'") from None
    # Never short of the last point: beyond the x limit, plotext draws its line through cells off the canvas for ages.
    upper = max([max_iters or 0, *(i for c in curves for i, _ in c.points)])
    plain = _PLAIN_MARKERS
    # plotext's text goes to the terminal as it is, colour codes and all: names from disk are written out first
    title = visible(title)
    curves = [replace(c, label=visible(c.label)) for c in curves]
    drawn = [(c, _COLOURS[n % len(_COLOURS)], "x" if c.ended else "hd" if colour else plain[n % len(plain)])
             for n, c in enumerate(curves) if c.points]
    legend = _legend([(plt.colorize(_sample(m), hue) if colour else _sample(m), c.label) for c, hue, m in drawn], width)
    plt.clear_figure()
    plt.limit_size(False, False)  # the size asked for, not the size of whatever terminal runs this (none, for a pipe)
    try:
        plt.plot_size(width, max(height - len(legend), 5))
        plt.theme("clear")  # no painted background: the terminal's own, light or dark
        for curve, hue, _ in drawn:
            xs = [i for i, _ in curve.points]
            for band in (curve.low, curve.high):
                if band is not None:
                    plt.plot(xs, list(band), marker="braille", color=hue)
        for curve, hue, marker in drawn:
            plt.plot([i for i, _ in curve.points], [m for _, m in curve.points], marker=marker, color=hue)
        ticks = integer_ticks(upper, width - _Y_AXIS_COLUMNS)
        plt.xticks(ticks, [str(t) for t in ticks])
        plt.xlim(0, max(upper, 1))
        plt.title(title)
        plt.xlabel("iteration")
        plt.ylabel("mIoU (%)")
        text: str = plt.build()
    finally:
        plt.clear_figure()
        plt.limit_size()
    text = "\n".join([text.rstrip("\n"), *legend])
    return text if colour else plt.uncolorize(text)


def _sample(marker: str) -> str:
    """What a line drawn with ``marker`` looks like, two columns wide, for its legend entry."""
    return "▗▞" if marker == "hd" else marker * 2


def _legend(entries: list[tuple[str, str]], width: int) -> list[str]:
    """``(sample, label)`` entries packed into as few lines as fit ``width``; a sample is 2 columns, coloured or not."""
    lines: list[str] = []
    line, used = "", 0
    for sample, label in entries:
        label = label if len(label) <= width - 3 else label[: width - 4] + "…"
        if used and used + 3 + 3 + len(label) > width:
            lines.append(line)
            line, used = "", 0
        line += ("   " if used else "") + f"{sample} {label}"
        used += (3 if used else 0) + 3 + len(label)
    return [*lines, line] if line else lines


def model_curves(statuses: Sequence[RunStatus], *, width: int, height: int = 18, colour: bool = True) -> list[str]:
    """One plot per model: each of its variants' curve (the mean over seeds, with the seeds' band) overlaid."""
    from prove_jobs.report.plots import seed_curve

    texts = []
    for model in dict.fromkeys(s.run.model for s in statuses):
        runs = [s for s in statuses if s.run.model == model and s.curve]
        curves = []
        for variant in sorted({s.run.variant for s in runs}):  # one legend order, whichever command asks
            mean = seed_curve(variant, [s for s in runs if s.run.variant == variant])
            if mean is not None:
                band = mean.seeds > 1
                curves.append(Curve(mean.label, tuple(zip(mean.iters, mean.mean, strict=True)),
                                    mean.low if band else None, mean.high if band else None, mean.ended))
        if curves:
            longest = max((s.max_iters or 0 for s in runs), default=0) or None
            texts.append(draw_curves(f"{model}: validation mIoU", curves, width=width, height=height,
                                     max_iters=longest, colour=colour))
    return texts
