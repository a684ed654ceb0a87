"""The report's Resources section: what each run, and each variant, used against what its jobs asked for, and
what to ask for next time.

Each figure comes from the best witness there is (docs/cluster.md, "Efficiency"): with accounting on, sacct's
``ElapsedRaw`` (each start of the run's job), ``TimelimitRaw``, ``AllocTRES`` (memory given) and ``MaxRSS``; its
run's efficiency samples (``prove/samples.jsonl``) for the utilisation, and for memory and time where sacct has
none; the logs (each start's wall time, mmengine's peak GPU memory) where neither is there. What none gives is
``?``, never 0. The request is what SLURM recorded, else the sweep's ``[resources]`` as they are now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prove_jobs.states import RunState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from prove_jobs.report.build import Report
    from prove_jobs.runs import Run
    from prove_jobs.scheduler import JobUsage
    from prove_jobs.spec import Resources
    from prove_jobs.status import RunStatus
    from prove_jobs.usage import Usage

MEM_HEADROOM = 1.25  # ask for the peak plus a quarter, rounded up to a whole GB: a bigger batch or image will come
TIME_HEADROOM = 1.2  # the time all starts took plus a fifth, rounded up to TIME_STEP_MIN
TIME_STEP_MIN = 10
ASK_LESS = 1.5  # a request over this many times the suggestion is worth lowering (the queue fits smaller jobs sooner)
NEAR_LIMIT = 0.9  # a peak over this share of the request: ask for more (SLURM's OOM kill, the time limit)
LOW_GPU_UTIL = 40.0  # GPUs busy less than this on average: the data loader is likely what they wait for


@dataclass(frozen=True)
class RunResources:
    """One run's (or one variant's) use of what its jobs asked for. Memory in GB, times in minutes."""

    label: str  # the model (``model (seed 1)``), or the variant
    variant: str
    completed: bool
    runs: int = 1
    gpu_hours: float | None = None
    source: str | None = None  # "GPU" or "CPU": what mean_util measures
    mean_util: float | None = None
    peak_mem_gb: float | None = None
    mem_gb: float | None = None  # asked (per node)
    peak_gpu_gb: float | None = None
    gpu_total_gb: float | None = None
    longest_min: float | None = None  # the longest start: what the time limit bounds
    total_min: float | None = None  # every start together: the time in one start
    timeout_min: float | None = None
    starts: int = 0
    sources: tuple[str, ...] = ()  # "time: sacct", "memory: samples", ...

    def advice(self) -> list[str]:
        """What to ask for next time: only where the figures say something, each with why."""
        said = []
        if self.peak_mem_gb is not None:
            suggest = max(1, math.ceil(self.peak_mem_gb * MEM_HEADROOM))
            if self.mem_gb is None:
                said.append(f"mem_gb = {suggest} would do (peak {self.peak_mem_gb:.1f} GB)")
            elif self.peak_mem_gb > NEAR_LIMIT * self.mem_gb:
                said.append(f"mem_gb = {max(suggest, math.ceil(self.mem_gb) + 1)}: the peak was "
                            f"{self.peak_mem_gb / self.mem_gb:.0%} of {self.mem_gb:g} GB")
            elif self.mem_gb > ASK_LESS * suggest:
                said.append(f"mem_gb = {suggest} rather than {self.mem_gb:g} (peak {self.peak_mem_gb:.1f} GB)")
        if self.completed and self.total_min is not None and self.timeout_min is not None:
            suggest_min = max(TIME_STEP_MIN, math.ceil(self.total_min * TIME_HEADROOM / TIME_STEP_MIN) * TIME_STEP_MIN)
            if self.starts > 1 and self.longest_min is not None and self.longest_min >= NEAR_LIMIT * self.timeout_min:
                said.append(f"timeout_min = {suggest_min} would train it in one start (it took {self.starts})")
            elif self.timeout_min > ASK_LESS * suggest_min:
                said.append(f"timeout_min = {suggest_min} would do ({_minutes(self.total_min)} used of "
                            f"{self.timeout_min:g})")
        if self.source == "GPU" and self.mean_util is not None and self.mean_util < LOW_GPU_UTIL:
            said.append(f"GPUs {self.mean_util:.0f}% busy on average: more cpus_per_task and data loader workers, "
                        "or fewer GPUs")
        return said

    def next_time(self) -> str:
        said = self.advice()
        if said:
            return "; ".join(said)
        known = self.peak_mem_gb is not None or (self.completed and self.total_min is not None)
        return "as asked" if known else "?"

    def to_json(self) -> dict[str, Any]:
        return {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()},
                "sources": list(self.sources), "advice": self.advice()}


def collect_resources(statuses: Sequence[RunStatus], asked_for: Callable[[Run], Resources | None],
                      warnings: list[str]) -> list[RunResources]:
    """Each run that started: one sacct for all their SLURM jobs (nothing where accounting is off), its samples."""
    from prove_jobs.scheduler import usage
    from prove_jobs.usage import usage_of

    started = [s for s in statuses if (s.meta is not None and s.meta.started_at) or (s.log and s.log.starts)]
    jobs = [s.meta.job_id for s in started if s.meta and s.meta.executor == "slurm" and s.meta.job_id]
    accounted = usage(jobs) if jobs else {}
    return [run_resources(s, asked_for(s.run), accounted.get(s.job_id or ""), usage_of(s.run.run_dir, warnings))
            for s in started]


def run_resources(status: RunStatus, asked: Resources | None, acct: JobUsage | None,
                  sampled: Usage | None) -> RunResources:
    """One run's figures, each from sacct, else its samples, else its logs (``sources`` says which)."""
    sources = []
    mem_gb = acct.mem_mb / 1024 if acct and acct.mem_mb else (asked.mem_gb if asked else None)
    timeout = acct.timelimit_min if acct and acct.timelimit_min else (asked.timeout_min if asked else None)
    peak_mem = None
    if acct and acct.max_rss_mb is not None:
        peak_mem = acct.max_rss_mb / 1024
        sources.append("memory: sacct")
    elif sampled and sampled.peak_rss_mb is not None:
        peak_mem = sampled.peak_rss_mb / 1024
        sources.append("memory: samples")
    logged = status.train.memory_mb if status.train else None  # mmengine's peak allocated on the GPU
    peak_gpu = (acct.max_gpu_mb if acct and acct.max_gpu_mb else
                sampled.peak_gpu_mb if sampled and sampled.peak_gpu_mb is not None else logged)
    spans: tuple[float, ...] = ()
    walls = tuple(s.wall_s for s in status.log.lineage if s.counted and s.wall_s is not None) if status.log else ()
    for witness, found in (("sacct", acct.elapsed_s if acct else ()), ("samples", sampled.spans_s if sampled else ()),
                           ("logs", walls)):
        if found:
            spans = found
            sources.append(f"time: {witness}")
            break
    if sampled and sampled.mean_util is not None:
        sources.append("use: samples")
    name = status.run.model + ("" if status.run.seed is None else f" (seed {status.run.seed})")
    return RunResources(
        label=name, variant=status.run.variant, completed=status.state is RunState.COMPLETED,
        gpu_hours=status.gpu_hours, source=sampled.source if sampled else None,
        mean_util=sampled.mean_util if sampled else None, peak_mem_gb=peak_mem, mem_gb=mem_gb,
        peak_gpu_gb=None if peak_gpu is None else peak_gpu / 1024,
        gpu_total_gb=sampled.gpu_total_mb / 1024 if sampled and sampled.gpu_total_mb else None,
        longest_min=max(spans) / 60 if spans else None, total_min=sum(spans) / 60 if spans else None,
        timeout_min=timeout, starts=len(spans), sources=tuple(sources))


def variant_resources(rows: Sequence[RunResources], variant: str) -> RunResources:
    """A variant's runs together: GPU-hours summed, the mean of their utilisations, the largest peak, the longest
    time against the largest request (what one ``[resources]`` line for the variant must cover)."""

    def most(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    hours = [r.gpu_hours for r in rows if r.gpu_hours is not None]
    utils = [r.mean_util for r in rows if r.mean_util is not None]
    done = [r for r in rows if r.completed]
    return RunResources(
        label=variant, variant=variant, completed=bool(done), runs=len(rows),
        gpu_hours=sum(hours) if hours else None, source=next((r.source for r in rows if r.source), None),
        mean_util=sum(utils) / len(utils) if utils else None, peak_mem_gb=most([r.peak_mem_gb for r in rows]),
        mem_gb=most([r.mem_gb for r in rows]), peak_gpu_gb=most([r.peak_gpu_gb for r in rows]),
        gpu_total_gb=most([r.gpu_total_gb for r in rows]), longest_min=most([r.longest_min for r in rows]),
        total_min=most([r.total_min for r in done]), timeout_min=most([r.timeout_min for r in rows]),
        starts=max((r.starts for r in done), default=0),
        sources=tuple(dict.fromkeys(s for r in rows for s in r.sources)))


def by_variant(report: Report) -> list[RunResources]:
    return [variant_resources(rows, v.name) for v in report.variants
            if (rows := [r for r in report.resources if r.variant == v.name])]


def resources_json(report: Report) -> dict[str, Any]:
    return {"runs": [r.to_json() for r in report.resources], "variants": [r.to_json() for r in by_variant(report)]}


def resources_lines(report: Report) -> list[str]:
    """The section, Markdown: a table of runs, one of variants; nothing when no run started."""
    from prove_jobs.report.markdown import _table

    if not report.resources:
        return []
    header = ["Model", "Variant", "GPU-hours", "Mean use", "Peak memory", "Peak GPU memory", "Longest start",
              "Next time", "From"]
    rows = [[r.label, r.variant, *_cells(r), ", ".join(r.sources) or "?"] for r in report.resources]
    variants = [[r.label, str(r.runs), *_cells(r)] for r in by_variant(report)]
    return ["## Resources", "",
            "What each run used against what its job asked for (`mem_gb`, `timeout_min`): *mean use* is the GPUs' "
            "utilisation (a CPU-only run: its CPU use over the cores it asked for) over the run's efficiency "
            "samples; *peak memory* the largest resident memory of the training and its data loader; the *longest "
            "start* is what the time limit bounds. *Next time* suggests a request: the peak plus 25% rounded up to "
            "a GB; all starts' time plus 20% rounded up to 10 minutes (completed runs). *From* says which witness "
            "gave each figure: sacct (accounting on), the samples, or the logs; `?` is what none gave. "
            "docs/cluster.md (Efficiency) says more.", "",
            *_table(header, rows), "### Per variant", "",
            "The variant's runs together: GPU-hours summed, the mean of their mean use, the largest peak and the "
            "longest start, against the largest request.", "",
            *_table(["Variant", "Runs", "GPU-hours", "Mean use", "Peak memory", "Peak GPU memory", "Longest start",
                     "Next time"], variants)]


def _cells(r: RunResources) -> list[str]:
    return ["?" if r.gpu_hours is None else f"{r.gpu_hours:.2f}",
            "?" if r.mean_util is None else f"{r.mean_util:.0f}% {r.source}",
            _against(r.peak_mem_gb, r.mem_gb, "GB", 1),
            "-" if r.source == "CPU" and r.peak_gpu_gb is None else _against(r.peak_gpu_gb, r.gpu_total_gb, "GB", 1),
            _against(r.longest_min, r.timeout_min, "min", 1)
            + (f" ({r.starts} starts)" if r.starts > 1 else ""),
            r.next_time()]


def _against(used: float | None, asked: float | None, unit: str, digits: int) -> str:
    """``1.2 of 2 GB (60%)``, ``1.2 GB of ?``, ``? of 2 GB``."""
    if used is None:
        return "?" if asked is None else f"? of {asked:g} {unit}"
    if asked is None:
        return f"{used:.{digits}f} {unit} of ?"
    return f"{used:.{digits}f} of {asked:g} {unit} ({used / asked:.0%})" if asked else f"{used:.{digits}f} {unit}"


def _minutes(value: float) -> str:
    return f"{value:.1f} min"
