"""Ask SLURM about jobs: one batched query per call, never one per job.

Every scheduler command goes through :func:`call` (after dask-jobqueue's ``_call``): it times
out, logs the command with its duration (``prove-jobs -v``), and turns a missing command, a
timeout or a non-zero exit into ``SchedulerUnavailable`` carrying the command, its exit code
and its stderr.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prove_jobs.errors import SchedulerUnavailable
from prove_jobs.verbose import INFO, SCHEDULER, say

TIMEOUT_S = 20.0
# The fewest fields status shows: the job (an array task as 12_3), its state, node, why it waits, and the
# submit and start times (the queue wait); who submitted it is the run's metadata's word.
SQUEUE_FIELDS = "%i|%T|%N|%r|%V|%S"
SACCT_FIELDS = "JobID,State,NodeList,Reason,Submit,Start"


@dataclass(frozen=True)
class JobInfo:
    """What squeue (or sacct) says of one job."""

    job_id: str
    state: str  # SLURM's own word: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
    node: str = ""
    reason: str = ""  # squeue's %r: why a pending job waits (Priority, Resources, Dependency, ...)
    from_accounting: bool = False  # sacct's record of a job squeue has forgotten
    submitted: float | None = None  # when SLURM queued it and started it (the controller's clock, both)
    started: float | None = None


@dataclass(frozen=True)
class Answer:
    """The scheduler's word on the jobs it was asked about: a job asked about and not found is gone."""

    asked: frozenset[str]
    jobs: Mapping[str, JobInfo]
    asked_at: float = float("inf")  # time.time() when asked: a job's record newer than it wins (poll.fresher)

    def get(self, job_id: str) -> JobInfo | None:
        return self.jobs.get(job_id)


def ask(job_ids: Iterable[str]) -> Answer:
    """One squeue (then one sacct) for all of ``job_ids``; raises ``SchedulerUnavailable``."""
    wanted, asked_at = frozenset(j for j in job_ids if j), time.time()
    return Answer(wanted, query_jobs(wanted) if wanted else {}, asked_at)


def ask_or_none(job_ids: Iterable[str | None]) -> Answer | None:
    """:func:`ask` about the jobs among ``job_ids`` (``None``: no job), or ``None`` when the scheduler does not
    answer: for callers that go on without it (a claim's liveness is then unknown, never guessed)."""
    try:
        return ask(j for j in job_ids if j)
    except SchedulerUnavailable:
        return None


def call(args: Sequence[str], *, timeout_s: float = TIMEOUT_S) -> str:
    """Run one scheduler command and return its stdout."""
    import shutil
    import subprocess

    command = " ".join(args)
    if shutil.which(args[0]) is None:
        raise SchedulerUnavailable(f"{args[0]} not found on PATH (is this a SLURM login node?)")
    started = time.monotonic()
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        say(SCHEDULER, INFO, "%s: no answer within %.0f s", command, timeout_s)
        raise SchedulerUnavailable(f"`{command}` did not answer within {timeout_s:.0f} s") from None
    elapsed = time.monotonic() - started
    say(SCHEDULER, INFO, "%s (%.3f s, exit %d)", command, elapsed, done.returncode)
    if done.returncode != 0:
        stderr = " ".join(done.stderr.split()) or "no stderr"
        raise SchedulerUnavailable(f"`{command}` failed (exit {done.returncode}): {stderr}", done.stderr)
    return done.stdout


def slurm_silence() -> str | None:
    """Why no SLURM controller answers here (``sinfo`` missing, silent, failing); ``None`` when one does."""
    try:
        call(["sinfo", "--noheader", "--format=%P"], timeout_s=10)
    except SchedulerUnavailable as exc:
        return str(exc)
    return None


def slurm_available() -> bool:
    """Does a SLURM controller answer here?"""
    return slurm_silence() is None


def query_jobs(job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """Live jobs from one ``squeue`` call, then finished ones from one ``sacct`` call if it answers."""
    wanted = sorted({j for j in job_ids if j})
    if not wanted:
        return {}
    found = _squeue(wanted)
    missing = [j for j in wanted if j not in found]
    if missing:
        # Accounting is off on many clusters: squeue and the run's metadata must do then.
        try:
            found.update(_sacct(missing))
        except SchedulerUnavailable as exc:
            say(SCHEDULER, INFO, "sacct unavailable: %s", exc)
    return found


def allocations(job_ids: Iterable[str]) -> dict[str, tuple[float, int | None]]:
    """What accounting says each job was allocated: (seconds, GPUs), the seconds summed over every start
    of a requeued job (``sacct --duplicates``); {} where accounting is off or does not answer."""
    import re

    wanted = sorted({j for j in job_ids if j})
    if not wanted:
        return {}
    try:
        out = call(["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
                    "--format=JobID,ElapsedRaw,AllocTRES", f"--jobs={','.join(wanted)}"])
    except SchedulerUnavailable:
        return {}
    found: dict[str, tuple[float, int | None]] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        gpu = re.search(r"gres/gpu=(\d+)", parts[2])
        seconds, gpus = found.get(parts[0], (0.0, None))
        found[parts[0]] = (seconds + int(parts[1]), int(gpu.group(1)) if gpu else gpus)
    return found


@dataclass(frozen=True)
class JobUsage:
    """What accounting says one job used: each start's elapsed time (a requeued job has a record per start), its
    time limit, the memory it was allocated per node, and the largest resident memory of one of its tasks."""

    elapsed_s: tuple[float, ...] = ()
    timelimit_min: int | None = None
    mem_mb: float | None = None  # AllocTRES mem over its nodes: what --mem gave
    max_rss_mb: float | None = None  # MaxRSS (or TRESUsageInMax mem) of its steps; None: not gathered
    max_gpu_mb: float | None = None  # TRESUsageInMax gres/gpumem, where SLURM gathers it (NVML)


USAGE_FIELDS = "JobID,ElapsedRaw,TimelimitRaw,AllocTRES,MaxRSS,TRESUsageInMax"


def usage(job_ids: Iterable[str]) -> dict[str, JobUsage]:
    """One sacct for what each job used (the report's resources); {} where accounting is off or does not answer.

    ``MaxRSS`` is empty where the cluster gathers nothing (``JobAcctGatherType=jobacct_gather/none``): then
    ``max_rss_mb`` is ``None`` and the report reads the run's own samples."""
    wanted = sorted({j for j in job_ids if j})
    if not wanted:
        return {}
    try:
        out = call(["sacct", "--noheader", "--parsable2", "--duplicates", f"--format={USAGE_FIELDS}",
                    f"--jobs={','.join(wanted)}"])
    except SchedulerUnavailable:
        return {}
    return parse_usage(out)


def parse_usage(out: str) -> dict[str, JobUsage]:
    """sacct's lines of USAGE_FIELDS: a job's record (``12_3``), then its steps' (``12_3.batch``, ``12_3.0``)."""
    import re
    from dataclasses import replace

    found: dict[str, JobUsage] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 6 or not parts[0]:
            continue
        job, _, step = parts[0].partition(".")
        known = found.get(job, JobUsage())
        if not step:
            tres = dict(item.split("=", 1) for item in parts[3].split(",") if "=" in item)
            nodes = int(tres["node"]) if tres.get("node", "").isdigit() else 1
            mem = _mib(tres.get("mem", ""))
            elapsed = (*known.elapsed_s, float(parts[1])) if parts[1].isdigit() and int(parts[1]) else known.elapsed_s
            found[job] = replace(known, elapsed_s=elapsed,
                                 timelimit_min=int(parts[2]) if parts[2].isdigit() else known.timelimit_min,
                                 mem_mb=mem / max(nodes, 1) if mem is not None else known.mem_mb)
            continue
        usage_max = dict(item.split("=", 1) for item in parts[5].split(",") if "=" in item)
        rss = _mib(parts[4]) or _mib(usage_max.get("mem", ""))
        gpu = re.fullmatch(r"\d+", usage_max.get("gres/gpumem", ""))
        found[job] = replace(known, max_rss_mb=_larger(known.max_rss_mb, rss),
                             max_gpu_mb=_larger(known.max_gpu_mb, int(gpu.group()) / 2**20 if gpu else None))
    return found


def _mib(text: str) -> float | None:
    """sacct's ``1.50G``, ``2048M``, ``123456K`` (``2Gn``/``2Gc`` of older versions), bytes without a unit, in MiB;
    empty or ``0``: not known."""
    import re

    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)[nc]?", text.strip())
    if found is None or not float(found.group(1)):
        return None
    return float(found.group(1)) * float(1024 ** "BKMGTP".index(found.group(2) or "B")) / 2**20


def _larger(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def max_array_size() -> int | None:
    """The cluster's ``MaxArraySize`` (``scontrol show config``); ``None`` when it cannot be read."""
    import re

    try:
        found = re.search(r"^MaxArraySize\s*=\s*(\d+)", call(["scontrol", "show", "config"]), re.MULTILINE)
    except SchedulerUnavailable:
        return None
    return int(found.group(1)) if found else None


def scancel(job_ids: Sequence[str]) -> dict[str, str]:
    """Cancel ``job_ids`` with one scancel; returns the jobs it could not cancel, each with scancel's word on it.

    scancel goes on past a job it may not cancel (another user's) and exits 1 naming it; a
    failure that names no job (no controller) is every job's.
    """
    import re

    try:
        call(["scancel", *job_ids])
    except SchedulerUnavailable as exc:
        named = {m.group(1): m.group(2).strip()
                 for m in re.finditer(r"job id (\S+?):\s*(.+)", exc.stderr)}
        failed = {job: why for job, why in named.items() if job in job_ids}
        return failed or dict.fromkeys(job_ids, str(exc))
    return {}


def _squeue(job_ids: Sequence[str]) -> dict[str, JobInfo]:
    try:
        out = call(["squeue", "--noheader", "--array", "--states=all", f"--format={SQUEUE_FIELDS}",
                    f"--jobs={','.join(job_ids)}"])
    except SchedulerUnavailable as exc:
        # squeue refuses the whole query once every listed job has left its memory (MinJobAge).
        if "Invalid job id" in str(exc):
            return {}
        raise
    return {info.job_id: info for info in _parse(out, from_accounting=False)}


def _sacct(job_ids: Sequence[str]) -> dict[str, JobInfo]:
    out = call(["sacct", "--noheader", "--parsable2", "--allocations",
                f"--format={SACCT_FIELDS}", f"--jobs={','.join(job_ids)}"])
    return {info.job_id: info for info in _parse(out, from_accounting=True)}


def _parse(out: str, *, from_accounting: bool) -> list[JobInfo]:
    """Lines of SQUEUE_FIELDS (or SACCT_FIELDS): job|state|node|reason|submit|start."""
    infos = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        # "CANCELLED by 1000" -> "CANCELLED"
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"
        reason = parts[3] if parts[3] not in ("None", "(null)") else ""
        submitted, started = (_when(parts[4]), _when(parts[5])) if len(parts) > 5 else (None, None)
        infos.append(JobInfo(parts[0], state, parts[2], reason, from_accounting, submitted, started))
    return infos


def _when(text: str) -> float | None:
    """squeue's and sacct's ``2026-12-02T05:00:00`` (the controller's local time); ``N/A``, ``Unknown``: None."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
