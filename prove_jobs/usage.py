"""What a run used over all its starts, from its samples (``prove/usage.json``, the sampler's sums, else the samples
themselves): ``status RUN_DIR``'s efficiency lines and the report's Resources section.

:mod:`prove_jobs.efficiency` reads the samples, and a live run's last ones for ``status``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.efficiency import number, read_segments
from prove_jobs.runs import CONFIG_DIR
from prove_jobs.sampler import OLD_SAMPLES_FILE, SAMPLES_FILE, USAGE_FILE

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.status import RunStatus


@dataclass(frozen=True)
class Usage:
    """What a run's samples say over every start they cover."""

    source: str  # "GPU" or "CPU"
    mean_util: float | None
    peak_rss_mb: float | None
    peak_gpu_mb: float | None
    gpu_total_mb: float | None
    spans_s: tuple[float, ...]  # each start's time, sampler start to last sample
    samples: int
    every: float | None

    @property
    def longest_s(self) -> float:
        return max(self.spans_s, default=0.0)

    @property
    def total_s(self) -> float:
        return sum(self.spans_s)


def usage_of(run_dir: Path, warnings: list[str] | None = None) -> Usage | None:
    """Every sample of a run, summed up; ``None`` when it has none. From the sampler's own sums (``usage.json``, a
    few hundred bytes a start) where they are, else from the samples (days of them: seconds to parse)."""
    if not _may_have_samples(run_dir):
        return None
    summed = _summed(run_dir, warnings)
    if summed is not None:
        return summed
    segments = read_segments(run_dir, warnings=warnings)
    if not segments:
        return None
    samples = [s for seg in segments for s in seg.samples]
    utils = [u for s in samples if (u := s.util) is not None]
    rss = [s.rss_mb for s in samples if s.rss_mb is not None]
    gpu = [m for s in samples if (m := s.gpu_mb) is not None]
    totals = [g[2] for s in samples for g in s.gpu if g[2] is not None]
    return Usage(source="GPU" if any(seg.source == "GPU" for seg in segments) else "CPU",
                 mean_util=sum(utils) / len(utils) if utils else None, peak_rss_mb=max(rss, default=None),
                 peak_gpu_mb=max(gpu, default=None), gpu_total_mb=max(totals, default=None),
                 spans_s=tuple(seg.span_s for seg in segments), samples=len(samples), every=segments[-1].every)


def _may_have_samples(run_dir: Path) -> bool:
    """Could the run's ``prove/`` hold samples? One listing where three opens would fail: the report asks it of
    every run, and most of a group's history was never sampled (no ``prove/``: started by hand, or before the
    sampler)."""
    folder = run_dir / CONFIG_DIR
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return True  # a link or a file where the folder should be: the readers refuse it, in a warning
        names = os.listdir(folder)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable: the readers say why
    return any(name in names for name in (USAGE_FILE, OLD_SAMPLES_FILE, SAMPLES_FILE))


def usage_lines(status: RunStatus, warnings: list[str]) -> list[str]:
    """``status RUN_DIR``'s lines on what the run used (nothing for a run never sampled); what could not be read
    goes to ``warnings``."""
    usage = usage_of(status.run.run_dir, warnings)
    lines = []
    if usage is not None:
        mean = "?" if usage.mean_util is None else f"{usage.mean_util:.0f}%"
        starts = len(usage.spans_s)
        text = (f"Efficiency: {usage.source} use {mean} on average over {usage.samples:,} samples "
                f"(every {usage.every or 0:g} s, {starts} start{'s' if starts > 1 else ''}, longest "
                f"{usage.longest_s / 60:.1f} min); peak memory {_gb(usage.peak_rss_mb)} in RAM")
        if usage.peak_gpu_mb is not None:
            text += f", {_gb(usage.peak_gpu_mb)} of {_gb(usage.gpu_total_mb)} on a GPU"
        lines.append(text)
    if status.usage is not None:
        lines.append(f"Now: {status.usage.cell()} at its last sample"
                     + (f" (idle for {status.usage.idle_s / 60:.0f} min)" if status.usage.idle else ""))
    return lines


def _gb(mb: float | None) -> str:
    return "?" if mb is None else f"{mb / 1024:.1f} GB"


def _summed(run_dir: Path, warnings: list[str] | None) -> Usage | None:
    """``usage.json``: each start's count, utilisation sum, peaks, first and last time, every value checked."""
    from prove_jobs.safe_read import NotReadable, read_capped

    path = run_dir / CONFIG_DIR / USAGE_FILE
    try:
        data = json.loads(read_capped(path, 1 << 20, below=run_dir))
    except FileNotFoundError:
        return None
    except (NotReadable, OSError, ValueError, RecursionError) as exc:
        if warnings is not None:
            warnings.append(str(exc) if isinstance(exc, NotReadable) else f"{path}: not read ({exc})")
        return None
    starts = data.get("starts") if isinstance(data, dict) else None
    entries = starts if isinstance(starts, list) else [None]
    good = [found for entry in entries if (found := _summed_start(entry)) is not None]
    if len(good) < len(entries):
        if warnings is not None:
            warnings.append(f"{path}: {len(entries) - len(good)} start(s) not a summary; the samples read instead")
        return None
    if not good:
        return None
    util_n = sum(g.util_n for g in good)
    return Usage(source="GPU" if any(g.gpu for g in good) else "CPU",
                 mean_util=sum(g.util_sum for g in good) / util_n if util_n else None,
                 peak_rss_mb=_most(g.peak_rss_mb for g in good), peak_gpu_mb=_most(g.peak_gpu_mb for g in good),
                 gpu_total_mb=_most(g.gpu_total_mb for g in good), spans_s=tuple(g.last - g.start for g in good),
                 samples=sum(g.n for g in good), every=good[-1].every)


@dataclass(frozen=True)
class _Summed:
    start: float
    last: float
    n: int
    util_n: int
    util_sum: float
    every: float | None
    peak_rss_mb: float | None
    peak_gpu_mb: float | None
    gpu_total_mb: float | None
    gpu: bool


def _summed_start(entry: object) -> _Summed | None:
    if not isinstance(entry, dict):
        return None
    start, last, n, util_n, util_sum = (number(entry.get(k)) for k in ("start", "last", "n", "util_n", "util_sum"))
    if start is None or last is None or n is None or util_n is None or util_sum is None:
        return None
    if last < start or util_n > n or util_sum > 100 * util_n + 1:
        return None
    return _Summed(start, last, int(n), int(util_n), util_sum, number(entry.get("every")),
                   number(entry.get("peak_rss_mb")), number(entry.get("peak_gpu_mb")),
                   number(entry.get("gpu_total_mb")), entry.get("gpu") is True)


def _most(values: Iterable[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)
