"""Ask SLURM about jobs: one batched query per call, never one per job.

Every command goes through ``run_slurm``, which turns a missing command, a timeout or a
non-zero exit into ``SchedulerUnavailable`` carrying the command and its stderr.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prove_jobs.errors import SchedulerUnavailable

TIMEOUT_S = 20.0


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str  # SLURM's own word: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
    node: str = ""
    user: str = ""
    reason: str = ""


def run_slurm(args: Sequence[str], *, timeout_s: float = TIMEOUT_S) -> str:
    command = " ".join(args)
    if shutil.which(args[0]) is None:
        raise SchedulerUnavailable(f"{args[0]} not found on PATH (is this a SLURM login node?)")
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SchedulerUnavailable(f"`{command}` did not answer within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        stderr = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise SchedulerUnavailable(f"`{command}` failed: {stderr}")
    return done.stdout


def slurm_available() -> bool:
    """Does a SLURM controller answer here? (``--executor auto`` asks this.)"""
    try:
        run_slurm(["sinfo", "--noheader", "--format=%P"], timeout_s=10)
    except SchedulerUnavailable:
        return False
    return True


def query_jobs(job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """Live jobs from one ``squeue`` call, then finished ones from one ``sacct`` call if it answers."""
    wanted = sorted({j for j in job_ids if j})
    if not wanted:
        return {}
    found = _squeue(wanted)
    missing = [j for j in wanted if j not in found]
    if missing:
        # Accounting is off on many clusters: squeue and the run's metadata must do then.
        with contextlib.suppress(SchedulerUnavailable):
            found.update(_sacct(missing))
    return found


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    return {job_id: info.state for job_id, info in query_jobs(job_ids).items()}


def scancel(job_ids: Sequence[str]) -> None:
    run_slurm(["scancel", *job_ids])


def _squeue(job_ids: Sequence[str]) -> dict[str, JobInfo]:
    try:
        out = run_slurm(
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N|%u|%r",
             f"--jobs={','.join(job_ids)}"]
        )
    except SchedulerUnavailable as exc:
        # squeue refuses the whole query once every listed job has left its memory (MinJobAge).
        if "Invalid job id" in str(exc):
            return {}
        raise
    return {info.job_id: info for info in _parse(out, 5)}


def _sacct(job_ids: Sequence[str]) -> dict[str, JobInfo]:
    out = run_slurm(
        ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,NodeList,User",
         f"--jobs={','.join(job_ids)}"]
    )
    return {info.job_id: info for info in _parse(out, 4)}


def _parse(out: str, width: int) -> list[JobInfo]:
    infos = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < width or not parts[0]:
            continue
        # "CANCELLED by 1000" -> "CANCELLED"
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"
        infos.append(JobInfo(parts[0], state, parts[2], parts[3], parts[4] if width > 4 else ""))
    return infos
