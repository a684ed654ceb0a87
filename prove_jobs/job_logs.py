"""``prove/job.out`` and ``prove/job.err``: a run dir's links to its latest job's scheduler stdout and stderr, and
reading their end (why a run failed)."""

from __future__ import annotations

import os
from pathlib import Path

from prove_jobs.fsafe import replace_link
from prove_jobs.runs import CONFIG_DIR, JOB_STDERR, JOB_STDOUT


def link_job_logs(run_dir: Path, stdout: Path, stderr: Path) -> None:
    """``prove/job.out`` and ``prove/job.err`` in the run dir point at the latest job's files.

    submitit writes them next to its pickles (one sbatch ``--output`` pattern serves a whole array,
    so they cannot be written into each run dir). The links are relative: a data root mounted
    elsewhere on another host still resolves them. Replaced atomically, never followed.
    """
    for name, target in ((JOB_STDOUT, stdout), (JOB_STDERR, stderr)):
        link = run_dir / CONFIG_DIR / name
        replace_link(link, os.path.relpath(target, link.parent))


def tail_lines(path: Path, count: int, *, max_bytes: int = 64 * 1024, below: Path | None = None) -> list[str]:
    """The last ``count`` lines of a text file (reading at most its last ``max_bytes``); [] if missing or unreadable.

    ``path`` may be a link (``prove/job.err``: prove-jobs made it), but nothing between ``below`` and it;
    what it leads to must be a regular file, else :class:`~prove_jobs.safe_read.NotReadable` (never a wait).
    """
    from prove_jobs.safe_read import read_tail

    try:
        data, whole = read_tail(path, max_bytes, below=below, follow_last=True)
    except OSError:  # missing, unreadable
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not whole:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines if line.strip()][-count:]
