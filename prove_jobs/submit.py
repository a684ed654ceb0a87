"""Turn runs into submitit jobs: one job array per group of runs with the same resources.

``submit`` returns as soon as the jobs are queued. Local jobs run in their own process
session so that they outlive the command and its terminal; ``control.wait`` follows them
through the run metadata the payload writes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prove_jobs.claims import LockHolder, current_holder, job_alive, open_slurm_jobs, refuse_finished
from prove_jobs.conflicts import clear_conflict, note_queued_after, record_conflict, recorded_conflict
from prove_jobs.errors import ProveJobsError, RunError, SchedulerUnavailable
from prove_jobs.executors import (
    EXECUTORS,
    SIGNAL_DELAY_S,
    SIGNAL_JITTER_S,
    batch_script,
    job_folder,
    make_executor,
)
from prove_jobs.fsafe import make_dirs
from prove_jobs.identity import current_user, process_start
from prove_jobs.job_logs import link_job_logs
from prove_jobs.job_record import fresh_claim
from prove_jobs.jobdir import check_job_folder
from prove_jobs.lock_check import locks_hold_or_refuse
from prove_jobs.metadata import RunMeta, locked, now, read_meta_quietly, update_meta, write_meta
from prove_jobs.preflight import (
    check_data_root,
    check_dataset_root,
    check_planted_links,
    check_training_stack,
    job_weights,
    ready_weights,
    refuse_multi_process_local,
    short_limit_warning,
)
from prove_jobs.render import RenderedRun, render_run, rendered_digests, rendered_files, write_rendered
from prove_jobs.runs import Run
from prove_jobs.scheduler import ask_or_none, call, max_array_size, slurm_silence
from prove_jobs.skip import Skip, SkipReason, cancelled_on_purpose, finished
from prove_jobs.spec import Resources, Sweep

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from prove_jobs.payload import TakeOver, TrainingJob
    from prove_jobs.scheduler import Answer
    from prove_jobs.weight_cache import Fetched, Progress


# What a dataset's folder must hold for its loader (mmseg's CityscapesDataset reads these two).
@dataclass(frozen=True)
class Submission:
    """One run queued (or, on a dry run, that would be)."""

    run: Run
    executor: str
    job_id: str | None  # None for a dry run
    config_hash: str
    resources: Resources


@dataclass
class SubmitResult:
    """What ``submit`` did with each run it was given."""

    submitted: list[Submission] = field(default_factory=list)
    skipped: list[tuple[Run, Skip]] = field(default_factory=list)  # finished and cancelled runs, with why
    conflicts: list[tuple[Run, LockHolder]] = field(default_factory=list)  # held by someone else
    already_running: list[tuple[Run, LockHolder]] = field(default_factory=list)  # held by this user's own job
    warnings: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)  # dry run: what each array would be, as submitted
    weights: list[Fetched] = field(default_factory=list)  # the checkpoints made ready (dry run: looked at)
    refusals: list[str] = field(default_factory=list)  # dry run: what a real submit would refuse


def choose_executor(name: str, sweep: Sweep | None = None, runs: Sequence[Run] = ()) -> str:
    """``auto``: SLURM when a controller answers; else this machine, but only for runs that ask for no GPU
    (on a login node whose SLURM is down, a GPU sweep must not start training there)."""
    if name not in EXECUTORS:
        raise ProveJobsError(f"unknown executor {name!r} (valid: {', '.join(EXECUTORS)})")
    if name != "auto":
        return name
    silence = slurm_silence()
    if silence is None:
        return "slurm"
    gpus = [r for r in runs if sweep is not None and sweep.resources_for(r).gpus_per_node > 0]
    if gpus:
        raise SchedulerUnavailable(
            f"--executor auto: {silence}, and {gpus[0].name} asks for GPUs (resources.gpus_per_node): not trained on "
            "this machine; start SLURM (or run where it answers), or --executor local to train here anyway")
    return "local"


def submit(
    sweep: Sweep,
    runs: Sequence[Run],
    *,
    executor: str = "auto",
    dry_run: bool = False,
    skip_done: bool = False,
    named: Collection[str] = (),
    progress: Progress | None = None,
) -> SubmitResult:
    """Render, claim and queue ``runs``.

    A finished run is refused (nothing at all is written) unless ``skip_done``, which
    leaves such runs alone and submits the rest. A run someone else holds (a live claim
    or a held training lock) is a lock conflict: recorded for ``status`` and
    ``resubmit --lock-conflicts``, and not submitted; the other runs still are. A run this
    user's own job holds is ``already_running``, and nothing is recorded. A run someone
    cancelled stays cancelled unless its model is ``named`` (``--model``: asked for by name).
    Nothing is written on a dry run. Missing checkpoints are fetched into the weight cache before
    anything is claimed (``progress``: told how each download goes); a dry run fetches nothing.
    """
    result = SubmitResult()
    try:
        kind = choose_executor(executor, sweep, runs)
    except SchedulerUnavailable as exc:
        if not (dry_run and executor == "auto"):
            raise
        # a GPU sweep with no controller: what matters is what SLURM would be sent
        kind = "slurm"
        result.warnings.append(f"{str(exc).split(', and ')[0]}: showing what would be submitted to SLURM")
    if kind == "local":
        refuse_multi_process_local(sweep, runs)
    rendered = []
    metas = {run: read_meta_quietly(run.run_dir) for run in runs}
    jobs = ask_or_none(open_slurm_jobs(list(metas.values())))  # once, before any mutex is taken
    for run in runs:
        try:
            refuse_finished(run, sweep.recipe(run).max_iters)
        except RunError as exc:
            if not skip_done:
                raise
            result.skipped.append((run, finished(run, metas[run], exc)))
            continue
        cancelled = cancelled_on_purpose(metas[run], jobs)
        if cancelled and run.model not in named:
            result.skipped.append((run, Skip(SkipReason.CANCELLED,
                                             f"{cancelled}; name it to train it again ({run.options})")))
            continue
        rendered.append(render_run(sweep, run))
    if rendered:
        # Before any claim is written: what would make every job fail leaves no trace. A dry run makes the same
        # checks and says what a real submit would refuse.
        checks: list[Callable[[], object]] = [
            lambda: check_data_root(sweep.data_root),
            lambda: check_planted_links(sweep, [item.run for item in rendered]),
            lambda: check_dataset_root(sweep)]
        if kind == "local":
            checks.append(lambda: check_training_stack([sweep.resources_for(item.run) for item in rendered]))
        if kind == "slurm" and not dry_run and executor != "auto":  # auto chose slurm: sinfo has just answered
            checks.append(lambda: call(["sinfo", "--noheader", "--format=%P"], timeout_s=15))
        if kind == "slurm":
            checks.append(lambda: result.warnings.extend(filter(None, [locks_hold_or_refuse(
                sweep.data_root, lock_mode=sweep.sharing.lock_mode, partition=sweep.resources.partition,
                python=sweep.resources.python, dry_run=dry_run)])))
        for check in checks:
            try:
                check()
            except ProveJobsError as exc:
                if not dry_run:
                    raise
                result.refusals.append(str(exc))
    if rendered:
        result.weights = ready_weights(sweep, rendered, dry_run=dry_run, progress=progress)

    groups: dict[Resources, list[RenderedRun]] = {}
    for item in rendered:
        groups.setdefault(sweep.resources_for(item.run), []).append(item)
    if kind == "slurm":
        result.warnings += [short_limit_warning(r, items) for r, items in groups.items()
                            if r.timeout_min * 60 < SIGNAL_DELAY_S + SIGNAL_JITTER_S + 60]
    arrays = split_arrays(groups, max_array_size() if kind == "slurm" and any(len(g) > 1 for g in groups.values())
                          else None)
    if dry_run:
        for resources, items in arrays:
            result.submitted += [Submission(i.run, kind, None, i.config_hash, resources) for i in items]
            if kind == "slurm":
                name = _job_name(sweep, [i.run for i in items])
                result.scripts.append(batch_script(job_folder(sweep), resources, job_name=name, tasks=len(items)))
            else:
                result.scripts.append(f"{len(items)} local process(es), {resources.cpus_per_task} thread(s) each")
        return result

    with sharing_umask(sweep):
        for resources, items in arrays:
            _claim_and_queue(sweep, kind, resources, items, result, jobs, result.weights)
    return result


def split_arrays(groups: dict[Resources, list[RenderedRun]], limit: int | None) -> list[tuple[Resources,
                                                                                               list[RenderedRun]]]:
    """One array per resource set, cut into arrays of at most ``limit`` tasks (SLURM's MaxArraySize caps the
    task *index*: an array 0..n-1 needs n <= MaxArraySize)."""
    size = limit or max((len(items) for items in groups.values()), default=1)
    return [(resources, items[start:start + size]) for resources, items in groups.items()
            for start in range(0, len(items), size)]


@contextlib.contextmanager
def sharing_umask(sweep: Sweep) -> Iterator[None]:
    """Everything written meanwhile (metadata, rendered configs, submitit's folders) follows the sweep's umask."""
    old_umask = os.umask(sweep.sharing.umask_bits)
    try:
        yield
    finally:
        os.umask(old_umask)


def training_job(sweep: Sweep, run: Run, resources: Resources, token: str,
                 take_over: TakeOver | None = None, weights: tuple[tuple[str, str], ...] = (),
                 rendered: tuple[tuple[str, str], ...] = ()) -> TrainingJob:
    """The payload submitit pickles for ``run`` (light: torch is imported only when it runs).

    ``token``: the submission's; the job writes to the run's claim only while it is still that one.
    ``weights``: (path, sha256) of the checkpoints it loads, checked by the job before it loads them;
    ``rendered``: (name, sha256) of the config files this submission wrote, checked likewise.
    """
    from prove_jobs.payload import TrainingJob  # the runtime import; torch stays out

    return TrainingJob(str(run.run_dir), resources.cpus_per_task, sweep.sharing.lock_mode,
                       sweep.sharing.umask_bits, resources.max_requeues, take_over, token, weights, rendered)


def new_token() -> str:
    import secrets

    return secrets.token_hex(8)


def _make_job_folder(sweep: Sweep) -> None:
    check_job_folder(sweep.data_root, create=True)


def _claim_and_queue(sweep: Sweep, kind: str, resources: Resources, items: list[RenderedRun],
                     result: SubmitResult, jobs: Answer | None, fetched: Sequence[Fetched]) -> None:
    mode = sweep.sharing.lock_mode
    with contextlib.ExitStack() as held:
        # Check-and-set under each run's mutex: of several submitters racing for one run,
        # exactly one passes the check and records its claim before the others look.
        for item in sorted(items, key=lambda i: str(i.run.run_dir)):
            make_dirs(item.run.run_dir)
            held.enter_context(locked(item.run.run_dir, lock_mode=sweep.sharing.lock_mode))
        claimed = []
        for item in items:
            holder = current_holder(item.run, sweep.recipe(item.run).max_iters, mode, jobs)
            if holder is None:
                claimed.append(item)
            elif holder.user == current_user():
                result.already_running.append((item.run, holder))  # not a conflict: nothing to record
            else:
                record_conflict(item.run.run_dir, holder, str(sweep.path))
                result.conflicts.append((item.run, holder))
        if not claimed:
            return
        tokens = {item.run: new_token() for item in claimed}
        for item in claimed:
            write_rendered(item)
            write_meta(item.run.run_dir, _fresh_meta(sweep, item, kind, tokens[item.run]))
        queued = _queue(kind, sweep, resources, [(i, tokens[i.run], job_weights(i, fetched)) for i in claimed])
        for item, job in zip(claimed, queued, strict=True):
            job_id = str(job.job_id)
            link_job_logs(item.run.run_dir, Path(job.paths.stdout), Path(job.paths.stderr))
            update_meta(item.run.run_dir, token=tokens[item.run], job_id=job_id, **_job_identity(kind, job_id))
            clear_conflict(item.run.run_dir)
            result.submitted.append(Submission(item.run, kind, job_id, item.config_hash, resources))


def queued_behind(run: Run, holder: LockHolder) -> str | None:
    """The job of ours already queued behind ``holder``'s job on ``run`` (--after-holder), if any."""
    conflict = recorded_conflict(run.run_dir)
    if conflict is None or not conflict.queued_job_id:
        return None
    return str(conflict.queued_job_id) if conflict.after_job_id == holder.job_id else None


def queue_after_holder(sweep: Sweep, run: Run, holder: LockHolder, queued: Answer | None) -> Submission | None:
    """Queue ``run`` behind its holder's SLURM job; ``None`` when that cannot be done.

    The holder's claim is not touched: our job takes the run over when it starts (the
    payload checks again then, and exits at once if the holder completed this very config).
    A job already queued behind the same holder is not queued twice: ``queued`` is the
    scheduler's answer on those jobs (:func:`queued_behind`), asked once for all runs.
    """
    if holder.executor != "slurm" or not holder.job_id or holder.stale:
        return None
    waiting = queued_behind(run, holder)
    if waiting and job_alive("slurm", waiting, queued):
        return Submission(run, "slurm", waiting, "", sweep.resources_for(run))
    rendered = render_run(sweep, run)
    meta = read_meta_quietly(run.run_dir)
    if meta is None or meta.config_hash != rendered.config_hash:
        raise RunError(f"{run.run_dir}: {holder.user} trains another config here (config hash "
                       f"{meta.config_hash if meta else '?'} vs ours {rendered.config_hash}); "
                       "not queued behind it: agree on one, or use another data root")
    check_planted_links(sweep, [run])
    weights = job_weights(rendered, ready_weights(sweep, [rendered]))
    resources = sweep.resources_for(run)
    from prove_jobs.payload import TakeOver

    token = new_token()
    # The job writes its own rendering once the run is its own: the holder's files are hers (her dataset root)
    take_over = TakeOver(holder.job_id, rendered.config_hash, str(sweep.path), rendered_files(rendered))
    try:
        _make_job_folder(sweep)
        executor = make_executor("slurm", job_folder(sweep), resources, job_name=run.name, after_job=holder.job_id)
        with private_umask(sweep):
            job = executor.submit(training_job(sweep, run, resources, token, take_over, weights,
                                               rendered_digests(rendered)))
    except ProveJobsError:
        raise
    except Exception as exc:  # submitit wraps sbatch failures in its own errors
        raise ProveJobsError(f"queueing {run.name} after job {holder.job_id} failed: {_one_line(exc)}") from None
    with sharing_umask(sweep):
        note_queued_after(run.run_dir, str(job.job_id), holder.job_id)
    return Submission(run, "slurm", str(job.job_id), rendered.config_hash, resources)


def _fresh_meta(sweep: Sweep, item: RenderedRun, kind: str, token: str) -> RunMeta:
    # the submitter's process holds the claim until the job id is known: the claim is live meanwhile
    previous = read_meta_quietly(item.run.run_dir)
    resources = sweep.resources_for(item.run)
    return fresh_claim(model=item.run.model, variant=item.run.variant, seed=sweep.training_seed(item.run),
                       sweep_file=str(sweep.path), config_hash=item.config_hash, executor=kind, token=token,
                       max_iters=sweep.recipe(item.run).max_iters, attempts=previous.attempts if previous else 0,
                       lock_mode=sweep.sharing.lock_mode, layout=_layout(resources),
                       gpus=resources.nodes * resources.gpus_per_node)


def _layout(resources: Resources) -> str:
    return resources.layout if resources.world_size > 1 else ""


def _job_identity(kind: str, job_id: str) -> dict[str, Any]:
    # A local job id is the pid of submitit's controller: alive while the job is (and while it is
    # that process: its start time, read now, tells it from a later process given the same pid).
    if kind != "local":
        return {}
    start = process_start(int(job_id))
    return {"pid": int(job_id), "pid_start": start, "job_start": start}


@contextlib.contextmanager
def private_umask(sweep: Sweep) -> Iterator[None]:
    """submitit's job folders and the scheduler's log files: readable by the group, writable by their owner
    only (a colleague could otherwise plant a link in them before the job writes there)."""
    old_umask = os.umask(sweep.sharing.umask_bits | 0o022)
    try:
        yield
    finally:
        os.umask(old_umask)


def _queue(kind: str, sweep: Sweep, resources: Resources,
           runs: Sequence[tuple[RenderedRun, str, tuple[tuple[str, str], ...]]]) -> list[Any]:
    _make_job_folder(sweep)
    executor = make_executor(kind, job_folder(sweep), resources,
                             job_name=_job_name(sweep, [item.run for item, _, _ in runs]))
    try:
        with private_umask(sweep), executor.batch():
            jobs = [executor.submit(training_job(sweep, item.run, resources, token, weights=weights,
                                                 rendered=rendered_digests(item)))
                    for item, token, weights in runs]
    except ProveJobsError:
        raise
    except Exception as exc:  # submitit wraps sbatch failures in its own errors
        for item, token, _ in runs:
            update_meta(item.run.run_dir, token=token, failed_at=now(), error=f"submission failed: {exc}"[:500])
        raise ProveJobsError(f"submitting {len(runs)} run(s) to {kind} failed: {_one_line(exc)}") from None
    return jobs


def _job_name(sweep: Sweep, runs: Sequence[Run]) -> str:
    return runs[0].name if len(runs) == 1 else f"prove:{sweep.name}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]
