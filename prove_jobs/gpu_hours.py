"""GPU-hours: what SLURM's accounting (sacct) says each run's jobs were allocated, and the total line.

Where accounting answers, a run's GPU-hours are its allocated time times its GPUs; elsewhere
:attr:`~prove_jobs.status.RunStatus.gpu_hours` is its wall time (docs/status.md, "Time") times the GPUs
its job asked for.
"""

from __future__ import annotations

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from prove_jobs.metadata import RunMeta
    from prove_jobs.status import RunStatus

Allocated = dict[str, tuple[float, "int | None"]]  # job id -> (allocated seconds, GPUs)


def allocations(metas: Iterable[tuple[RunMeta | None, str | None]]) -> Allocated:
    """sacct's allocated time of the SLURM jobs among these runs' metadata: one query for all of them."""
    ids = [meta.job_id for meta, _ in metas if meta is not None and meta.executor == "slurm" and meta.job_id]
    if not ids:
        return {}
    from prove_jobs.scheduler import allocations as ask_sacct

    return ask_sacct(ids)


def allocated_hours(allocated: tuple[float, int | None] | None, meta: RunMeta | None) -> float | None:
    """The GPU-hours accounting gave a run's job (``allocated``: its seconds and GPUs, as :func:`allocations`
    found them), with the GPUs the job asked for where sacct does not say; ``None`` where it did not answer."""
    seconds, gpus = allocated or (0.0, None)
    gpus = gpus if gpus is not None else (meta.gpus if meta else None)
    if not seconds or gpus is None:
        return None
    return seconds * gpus / 3600


def gpu_hours_line(statuses: Sequence[RunStatus]) -> str:
    """``GPU-hours: 12.34 in all (5 runs)``: the sum of the runs' GPU-hours (the last line of ``status`` and of
    the report's time table); "" when no run says."""
    counted = [s.gpu_hours for s in statuses if s.gpu_hours is not None]
    if not counted:
        return ""
    return f"GPU-hours: {sum(counted):.2f} in all ({len(counted)} run{'s' if len(counted) > 1 else ''})"
