"""What a run's efficiency samples say (``prove/samples.jsonl``, written by :mod:`prove_jobs.sampler`).

Two readings, both plain Python (no torch: the login node reads them):

* :func:`live_usage`, for ``status``: the last 64 KB of the file of a run that is training: its utilisation now
  and whether it has been idle (under :data:`IDLE_UTIL_PCT` for :data:`IDLE_AFTER_S`, by the samples' own
  timestamps: one clock, the node's). Only runs in a live state are read: a root of 10,000 ended runs costs
  nothing more.
* :func:`prove_jobs.usage.usage_of`, for ``status RUN_DIR`` and the report: the run summed up (mean utilisation,
  peak memory, the time each start ran), from the sampler's own sums in ``prove/usage.json``, else from every
  sample kept (:func:`read_segments`).

Utilisation is the mean over the job's GPUs of ``nvidia-smi``'s ``utilization.gpu``; on a CPU-only job the
training's CPU use over the cores it may use. Every file is read as any file of the shared root
(:mod:`prove_jobs.safe_read`: no link followed, no FIFO waited on, at most :data:`MAX_BYTES` read); a line that
is not a sample is skipped, and one warning names the file and how many.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from prove_jobs.runs import CONFIG_DIR
from prove_jobs.sampler import MAX_BYTES, OLD_SAMPLES_FILE, SAMPLES_FILE, sample_util
from prove_jobs.states import RunState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from prove_jobs.status import RunStatus

IDLE_UTIL_PCT = 5.0  # under this, a sample is idle: a training keeps its GPUs far above it, even while validating
IDLE_AFTER_S = 30 * 60  # idle samples for this long in a row: `status` flags the run (stuck, or waiting on a rank)
LIVE_TAIL_BYTES = 64 << 10  # what status reads of a live run's file: 30 min of samples of 8 GPUs fit in 30 KB
STALE_AFTER_S = 5 * 60  # a file not written for this long (its sampler gone) says nothing about now
MAX_LINE_BYTES = 16 << 10  # a sample of 16 GPUs is under 1 KB
LIVE_STATES = (RunState.RUNNING, RunState.STARTING)


@dataclass(frozen=True)
class Sample:
    """One line: when (the node's clock), CPU use (% of the cores the training may use), resident memory (MiB),
    each GPU's ``(util %, used MiB, total MiB)``."""

    t: float
    cpu: float | None = None
    rss_mb: float | None = None
    gpu: tuple[tuple[float | None, float | None, float | None], ...] = ()

    @property
    def util(self) -> float | None:
        """The mean GPU utilisation (%); without GPUs, CPU use over the cores allowed (%)."""
        return sample_util(self.cpu, [g[0] for g in self.gpu])

    @property
    def gpu_mb(self) -> float | None:
        used = [g[1] for g in self.gpu if g[1] is not None]
        return max(used) if used else None


@dataclass(frozen=True)
class Segment:
    """The samples of one start of the training (one sampler), oldest first."""

    start: float
    host: str = ""
    cores: int | None = None
    every: float | None = None
    samples: tuple[Sample, ...] = ()

    @property
    def span_s(self) -> float:
        """From the sampler's start (just before the training's) to its last sample."""
        return max(0.0, self.samples[-1].t - self.start) if self.samples else 0.0

    @property
    def source(self) -> str:
        return "GPU" if any(s.gpu for s in self.samples) else "CPU"


def read_segments(run_dir: Path, *, tail: int | None = None,
                  warnings: list[str] | None = None) -> list[Segment]:
    """The starts the samples files tell of, oldest first; ``tail``: only the newest file's last bytes."""
    from prove_jobs.safe_read import NotReadable, read_tail

    names = (SAMPLES_FILE,) if tail is not None else (OLD_SAMPLES_FILE, SAMPLES_FILE)
    segments: list[Segment] = []
    for name in names:
        path = run_dir / CONFIG_DIR / name
        try:
            data, whole = read_tail(path, tail or MAX_BYTES, below=run_dir)
        except FileNotFoundError:
            continue
        except (NotReadable, OSError) as exc:
            if warnings is not None:
                warnings.append(str(exc) if isinstance(exc, NotReadable) else f"{path}: cannot read ({exc})")
            continue
        lines = data.split(b"\n")
        if not whole:
            lines = lines[1:]  # cut by the tail's start
        skipped = parse_samples(lines, segments)
        if skipped and warnings is not None:
            warnings.append(f"{path}: {skipped} line{'s' if skipped > 1 else ''} that {'are' if skipped > 1 else 'is'}"
                            " not a sample skipped")
    return [s for s in segments if s.samples]


def parse_samples(lines: list[bytes], segments: list[Segment]) -> int:
    """Append the samples of ``lines`` to ``segments``; returns how many non-empty lines were not samples."""
    skipped = 0
    current: list[Sample] = []

    def close() -> None:
        if segments and current:
            segments[-1] = replace(segments[-1], samples=segments[-1].samples + tuple(current))
        current.clear()

    for index, line in enumerate(lines):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            # the last line may be being written (or cut by a full disk): not garbage
            skipped += index != len(lines) - 1
            continue
        if isinstance(record, Sample):
            if not segments:  # the file's head was cut off (a tail read): a start we know only by its samples
                segments.append(Segment(start=record.t))
            current.append(record)
            continue
        close()
        if record["cont"] and segments:
            continue  # the same start, in a new file
        segments.append(Segment(start=record["start"], host=record["host"], cores=record["cores"],
                                every=record["every"]))
    close()
    return skipped


def _record(line: bytes) -> Sample | dict[str, Any] | None:
    """A sample, a start line (``{"start", "host", "cores", "every", "cont"}``), or ``None``: not one."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if "t" in data:
        t, cpu, rss = number(data.get("t")), number(data.get("cpu")), number(data.get("rss_mb"))
        gpus = data.get("gpu", [])
        if t is None or not isinstance(gpus, list) or len(gpus) > 64:
            return None
        triples = []  # util capped at 100: nvidia-smi's word; a planted 1e9 makes no mean
        for gpu in gpus:
            if not isinstance(gpu, list) or len(gpu) != 3:
                return None
            util, used, total = (number(v) for v in gpu)
            triples.append((None if util is None else min(util, 100.0), used, total))
        return Sample(t, None if cpu is None else min(cpu, 100.0), rss, tuple(triples))
    start = number(data.get("start"))
    if start is None:
        return None
    cores = data.get("cores")
    host = data.get("host")
    return {"start": start, "host": host[:255] if isinstance(host, str) else "",
            "cores": cores if isinstance(cores, int) and not isinstance(cores, bool) and 0 < cores < 1 << 16 else None,
            "every": number(data.get("every")), "cont": data.get("cont") is True}


def number(value: object) -> float | None:
    """A finite, non-negative number under 10^12 (a time, a percentage, MiB); anything else is unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value < 1e12 else None


# --- status: now, and idle ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Live:
    """A training run's utilisation at its last sample, and for how long it has been idle."""

    source: str  # "GPU" or "CPU"
    util: float | None
    at: float  # the sample's time (the node's clock)
    idle_s: float  # the samples in a row under IDLE_UTIL_PCT up to the last, from the first of them to it
    gpu_mb: float | None = None
    rss_mb: float | None = None
    host: str = ""

    @property
    def idle(self) -> bool:
        return self.idle_s >= IDLE_AFTER_S

    def cell(self) -> str:
        """``97% GPU``, ``45% CPU``; ``idle 42m`` once idle."""
        if self.idle:
            return f"idle {self.idle_s / 60:.0f}m"
        return "?" if self.util is None else f"{self.util:.0f}% {self.source}"

    def to_json(self) -> dict[str, Any]:
        return {"util_pct": None if self.util is None else round(self.util, 1), "source": self.source,
                "at": self.at, "idle_s": round(self.idle_s, 1), "idle": self.idle,
                "gpu_mem_mb": self.gpu_mb, "rss_mb": self.rss_mb, "host": self.host or None}


def live_usage(run_dir: Path, now: float) -> Live | None:
    """The last samples of a training run (``None``: none, or none written within :data:`STALE_AFTER_S`).

    Read from the end, parsed only as far as the answer needs: a busy run's last sample (one line), an idle run's
    samples back to its last busy one (at most the :data:`LIVE_TAIL_BYTES` read). Lines that are not samples are
    passed over here (``status RUN_DIR`` and the report name the file).
    """

    from prove_jobs.safe_read import NotReadable, read_tail

    path = run_dir / CONFIG_DIR / SAMPLES_FILE
    try:
        written = os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return None  # most runs: never sampled (an older prove-jobs, a hand-started run)
    if now - written > STALE_AFTER_S:
        return None
    try:
        data, whole = read_tail(path, LIVE_TAIL_BYTES, below=run_dir)
    except (NotReadable, OSError):
        return None
    lines = data.split(b"\n")
    newest_first = reversed(lines if whole else lines[1:])  # the first was cut by the tail's start
    start: list[dict[str, Any]] = []

    def samples() -> Iterator[Sample]:
        for line in newest_first:
            record = _record(line) if line.strip() else None
            if isinstance(record, Sample):
                yield record
            elif isinstance(record, dict) and not record["cont"]:
                start.append(record)  # the newest start begins here
                return

    live = _trailing(samples())
    return None if live is None else replace(live, host=start[0]["host"] if start else "")


def idle_of(segment: Segment) -> Live:
    """The newest sample of a start, and how long the samples under :data:`IDLE_UTIL_PCT` in a row before it last."""
    live = _trailing(reversed(segment.samples))
    assert live is not None  # a segment has samples
    return replace(live, host=segment.host)


def _trailing(newest_first: Iterable[Sample]) -> Live | None:
    """From the newest sample back: it, and the time since the first of the idle samples in a row up to it."""
    last = first_idle = None
    for sample in newest_first:
        last = last or sample
        util = sample.util
        if util is None or util >= IDLE_UTIL_PCT:
            break
        first_idle = sample
    if last is None:
        return None
    idle_s = 0.0 if first_idle is None else last.t - first_idle.t
    return Live("GPU" if last.gpu else "CPU", last.util, last.t, idle_s, last.gpu_mb, last.rss_mb)


def with_usage(status: RunStatus, now: float) -> RunStatus:
    """``status`` with its utilisation, and a note when idle; a run that is not training is returned as it is."""
    if status.state not in LIVE_STATES:
        return status
    live = live_usage(status.run.run_dir, now)
    if live is None:
        return status
    notes = status.notes
    if live.idle:
        host = live.host or status.node
        notes = (*notes, f"idle: {live.source} use under {IDLE_UTIL_PCT:g}% for the last {live.idle_s / 60:.0f} min"
                         f"{' on ' + host if host else ''} (prove/{SAMPLES_FILE}): stuck, or waiting on something?")
    return replace(status, usage=live, notes=notes)
