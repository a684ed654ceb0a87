"""A run's usage summed up (:class:`Usage`), and the sampler's own sums of it (``prove/usage.json``).

The sampler (:mod:`prove_jobs.sampler`) keeps, per start, a few hundred bytes of sums beside its samples; reading
them spares ``status RUN_DIR`` and the report days of samples. Every value is checked (:func:`number`): a file of
the shared root says what it likes, and one value out of place sends the reader back to the samples
(:func:`prove_jobs.efficiency.usage_of`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.runs import CONFIG_DIR
from prove_jobs.sampler import USAGE_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


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


def number(value: object) -> float | None:
    """A finite, non-negative number under 10^12 (a time, a percentage, MiB); anything else is unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value < 1e12 else None


def summed_usage(run_dir: Path, warnings: list[str] | None) -> Usage | None:
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
    rss, gpu, total = (number(entry.get(k)) for k in ("peak_rss_mb", "peak_gpu_mb", "gpu_total_mb"))
    return _Summed(start, last, int(n), int(util_n), util_sum, number(entry.get("every")), rss, gpu, total,
                   entry.get("gpu") is True)


def _most(values: Iterable[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)
