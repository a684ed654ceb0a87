"""Turn runs into submitit jobs: one job array per group of runs with the same resources.

``submit`` returns as soon as the jobs are queued. Local jobs run in their own process
session so that they outlive the command and its terminal; ``wait`` follows them through
the run metadata the payload writes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prove_jobs.errors import CorruptMetadata, ProveJobsError, RunError
from prove_jobs.locks import (
    TRAIN_LOCK,
    LockHolder,
    claim_alive,
    clear_conflict,
    conflict_for,
    file_owner,
    holder_of,
    move_corrupt_claim_aside,
    note_queued_after,
    record_conflict,
    scheduler_states_for,
    training_lock_held,
)
from prove_jobs.render import RenderedRun, render_run, write_rendered
from prove_jobs.runs import (
    Run,
    RunMeta,
    current_host,
    current_user,
    link_job_logs,
    meta_mutex,
    now,
    read_meta,
    update_meta,
    write_meta,
)
from prove_jobs.scheduler import run_slurm, slurm_available
from prove_jobs.spec import Resources, Sweep

if TYPE_CHECKING:
    from prove_jobs.payload import TakeOver, TrainingJob

EXECUTORS = ("auto", "slurm", "local")
SIGNAL_DELAY_S = 90  # submitit's --signal=USR2@90: the warning before the time limit
SIGNAL_JITTER_S = 60  # SLURM checks time limits about once a minute and may signal that much early
SUBMITIT_DIR = ".prove-jobs/submitit"


@dataclass(frozen=True)
class Submission:
    run: Run
    executor: str
    job_id: str | None  # None for a dry run
    config_hash: str
    resources: Resources


def choose_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ProveJobsError(f"unknown executor {name!r} (valid: {', '.join(EXECUTORS)})")
    if name == "auto":
        return "slurm" if slurm_available() else "local"
    return name


@dataclass
class SubmitResult:
    submitted: list[Submission] = field(default_factory=list)
    skipped: list[tuple[Run, str]] = field(default_factory=list)  # finished runs, with the reason
    conflicts: list[tuple[Run, LockHolder]] = field(default_factory=list)  # held by someone else
    warnings: list[str] = field(default_factory=list)


def submit(
    sweep: Sweep,
    runs: Sequence[Run],
    *,
    executor: str = "auto",
    dry_run: bool = False,
    skip_done: bool = False,
) -> SubmitResult:
    """Render, claim and queue ``runs``.

    A finished run is refused (nothing at all is written) unless ``skip_done``, which
    leaves such runs alone and submits the rest. A run someone else holds (a live claim
    or a held training lock) is a lock conflict: recorded for ``status`` and
    ``resubmit --lock-conflicts``, and not submitted; the other runs still are.
    Nothing is written on a dry run.
    """
    kind = choose_executor(executor)
    result = SubmitResult()
    rendered = []
    for run in runs:
        try:
            refuse_finished(run, sweep.variant(run.variant).max_iters)
        except RunError as exc:
            if not skip_done:
                raise
            result.skipped.append((run, str(exc)))
            continue
        rendered.append(render_run(sweep, run))
    if rendered and not dry_run:
        check_data_root(sweep.data_root)
        if kind == "slurm":
            # Before any claim is written: a controller that does not answer leaves no trace.
            run_slurm(["sinfo", "--noheader", "--format=%P"], timeout_s=15)

    groups: dict[Resources, list[RenderedRun]] = {}
    for item in rendered:
        groups.setdefault(sweep.resources_for(item.run), []).append(item)
    if kind == "slurm":
        result.warnings += [short_limit_warning(r, items) for r, items in groups.items()
                            if r.timeout_min * 60 < SIGNAL_DELAY_S + SIGNAL_JITTER_S + 60]

    with _sharing_umask(sweep):
        for resources, items in groups.items():
            if dry_run:
                result.submitted += [Submission(i.run, kind, None, i.config_hash, resources) for i in items]
                continue
            _claim_and_queue(sweep, kind, resources, items, result)
    return result


@contextlib.contextmanager
def _sharing_umask(sweep: Sweep) -> Iterator[None]:
    """Everything written meanwhile (metadata, rendered configs, submitit's folders) follows the sweep's umask."""
    old_umask = os.umask(sweep.sharing.umask_bits)
    try:
        yield
    finally:
        os.umask(old_umask)


def _training_job(sweep: Sweep, run: Run, resources: Resources, take_over: TakeOver | None = None) -> TrainingJob:
    """The payload submitit pickles for ``run`` (light: torch is imported only when it runs)."""
    from prove_jobs.payload import TrainingJob  # the runtime import; torch stays out

    return TrainingJob(str(run.run_dir), resources.cpus_per_task, sweep.sharing.lock_mode,
                       sweep.sharing.umask_bits, resources.max_requeues, take_over)


def _by_sweep(pairs: Iterable[tuple[Sweep, Run]]) -> list[tuple[Sweep, list[Run]]]:
    """Runs grouped by the sweep they are submitted with, in first-seen order."""
    groups: dict[Path, tuple[Sweep, list[Run]]] = {}
    for sweep, run in pairs:
        groups.setdefault(sweep.path, (sweep, []))[1].append(run)
    return list(groups.values())


def _claim_and_queue(sweep: Sweep, kind: str, resources: Resources, items: list[RenderedRun],
                     result: SubmitResult) -> None:
    mode = sweep.sharing.lock_mode
    with contextlib.ExitStack() as held:
        # Check-and-set under each run's mutex: of several submitters racing for one run,
        # exactly one passes the check and records its claim before the others look.
        for item in sorted(items, key=lambda i: str(i.run.run_dir)):
            item.run.run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(meta_mutex(item.run.run_dir, mode))
        claimed = []
        for item in items:
            holder = _current_holder(item.run, sweep, mode)
            if holder is not None:
                record_conflict(item.run.run_dir, holder, str(sweep.path))
                result.conflicts.append((item.run, holder))
            else:
                claimed.append(item)
        if not claimed:
            return
        for item in claimed:
            write_rendered(item)
            write_meta(item.run.run_dir, _fresh_meta(sweep, item, kind))
        jobs = _queue(kind, sweep, resources, [i.run for i in claimed])
        for item, job in zip(claimed, jobs, strict=True):
            job_id = str(job.job_id)
            link_job_logs(item.run.run_dir, Path(job.paths.stdout), Path(job.paths.stderr))
            update_meta(item.run.run_dir, job_id=job_id, **_submitter_pid(kind, job_id))
            clear_conflict(item.run.run_dir)
            result.submitted.append(Submission(item.run, kind, job_id, item.config_hash, resources))


def _current_holder(run: Run, sweep: Sweep, mode: str) -> LockHolder | None:
    """Who holds ``run`` now, live; ``None`` when it is free or its claim is stale (taken over)."""
    refuse_finished(run, sweep.variant(run.variant).max_iters)
    meta = read_claim(run.run_dir, mode)
    holder = holder_of(run.run_dir, meta, scheduler_states_for(meta), lock_mode=mode)
    if holder is not None and not holder.stale:
        return holder
    held = training_lock_held(run.run_dir, mode)
    if held is None:
        lock = run.run_dir / TRAIN_LOCK
        raise RunError(f"{lock}: cannot open the training lock as {current_user()} (owner: {file_owner(lock)}); "
                       "ask them to make it group-writable (see docs/locks.md)")
    if holder is None and held:
        # Training without an open claim: started by hand, or a claim unlocked with --force.
        lock = run.run_dir / TRAIN_LOCK
        return LockHolder(user=file_owner(lock), host="?", executor="unknown", job_id=None, pid=None,
                          since=lock.stat().st_mtime, sweep="")
    return None


def read_claim(run_dir: Path, mode: str) -> RunMeta | None:
    """The run's metadata; a corrupt file is moved aside (kept, never deleted) when nobody trains."""
    try:
        return read_meta(run_dir)
    except CorruptMetadata:
        move_corrupt_claim_aside(run_dir, mode)
        return None


def refuse_finished(run: Run, max_iters: int) -> None:
    """Never train over a finished run."""
    meta = read_meta_quietly(run.run_dir)
    if meta is not None and meta.finished_at is not None:
        raise RunError(
            f"{run.run_dir}: {run.name} already completed; move the run dir aside to train it again"
        )
    if (run.run_dir / f"iter_{max_iters}.pth").exists():
        raise RunError(f"{run.run_dir}: holds iter_{max_iters}.pth, a finished run; nothing submitted")


def read_meta_quietly(run_dir: Path) -> RunMeta | None:
    """The metadata, or ``None`` when it is missing or corrupt (the claim check reports that)."""
    try:
        return read_meta(run_dir)
    except RunError:
        return None


def job_alive(meta: RunMeta) -> bool:
    """Is the job of this metadata known to be queued or running?"""
    return claim_alive(meta, scheduler_states_for(meta)) is True


@dataclass
class ResubmitResult:
    submitted: list[Submission] = field(default_factory=list)
    still_held: list[tuple[Run, LockHolder]] = field(default_factory=list)
    settled: list[tuple[Run, str]] = field(default_factory=list)  # nothing left to do, with why
    queued_after: list[tuple[Submission, LockHolder]] = field(default_factory=list)  # --after-holder


def resubmit_lock_conflicts(
    runs: Sequence[Run], sweep_for: Callable[[Run, str], Sweep], *, executor: str = "auto",
    after_holder: bool = False,
) -> ResubmitResult:
    """Submit every run of ``runs`` on which this user met a lock conflict whose holder is gone.

    ``sweep_for(run, recorded_sweep_path)`` gives the sweep to submit a run with. Runs
    still held stay in conflict; runs the holder completed are settled, not retrained.
    ``after_holder``: a run still held by a SLURM job is queued behind it
    (``--dependency=afterany``) and starts by itself when the holder's job ends.
    """
    result = ResubmitResult()
    to_submit: list[tuple[Sweep, Run]] = []
    for run in runs:
        conflict = conflict_for(run.run_dir)
        if conflict is None:
            continue
        meta = read_meta_quietly(run.run_dir)
        if meta is not None and meta.finished_at is not None:
            clear_conflict(run.run_dir)
            result.settled.append((run, f"completed by {meta.user} (job {meta.job_id})"))
            continue
        to_submit.append((sweep_for(run, str(conflict.get("sweep", ""))), run))
    for sweep, sweep_runs in _by_sweep(to_submit):
        outcome = submit(sweep, sweep_runs, executor=executor, skip_done=True)
        result.submitted += outcome.submitted
        for run, reason in outcome.skipped:
            clear_conflict(run.run_dir)
            result.settled.append((run, reason))
        for run, holder in outcome.conflicts:
            queued = queue_after_holder(sweep, run, holder) if after_holder else None
            if queued is None:
                result.still_held.append((run, holder))
            else:
                result.queued_after.append((queued, holder))
    return result


def queue_after_holder(sweep: Sweep, run: Run, holder: LockHolder) -> Submission | None:
    """Queue ``run`` behind its holder's SLURM job; ``None`` when that cannot be done.

    The holder's claim is not touched: our job takes the run over when it starts (the
    payload checks again then, and exits at once if the holder completed this very config).
    A job already queued behind the same holder is not queued twice.
    """
    if holder.executor != "slurm" or not holder.job_id or holder.stale:
        return None
    conflict = conflict_for(run.run_dir) or {}
    queued = conflict.get("queued_job_id")
    if queued and conflict.get("after_job_id") == holder.job_id and job_alive_in_slurm(str(queued)):
        return Submission(run, "slurm", str(queued), "", sweep.resources_for(run))
    rendered = render_run(sweep, run)
    meta = read_meta_quietly(run.run_dir)
    if meta is None or meta.config_hash != rendered.config_hash:
        raise RunError(f"{run.run_dir}: {holder.user} trains another config here (config hash "
                       f"{meta.config_hash if meta else '?'} vs ours {rendered.config_hash}); "
                       "not queued behind it: agree on one, or use another data root")
    resources = sweep.resources_for(run)
    executor = make_executor("slurm", sweep.data_root / SUBMITIT_DIR / "%j", resources, job_name=run.name,
                             after_job=holder.job_id)
    from prove_jobs.payload import TakeOver

    take_over = TakeOver(holder.job_id, rendered.config_hash, str(sweep.path))
    try:
        with _sharing_umask(sweep):
            job = executor.submit(_training_job(sweep, run, resources, take_over))
    except Exception as exc:  # submitit wraps sbatch failures in its own errors
        raise ProveJobsError(f"queueing {run.name} after job {holder.job_id} failed: {_one_line(exc)}") from None
    note_queued_after(run.run_dir, str(job.job_id), holder.job_id)
    return Submission(run, "slurm", str(job.job_id), rendered.config_hash, resources)


def job_alive_in_slurm(job_id: str) -> bool:
    from prove_jobs.locks import SLURM_ALIVE
    from prove_jobs.scheduler import slurm_states

    with contextlib.suppress(ProveJobsError):
        return slurm_states([job_id]).get(job_id, "") in SLURM_ALIVE
    return False


def resubmit_failed(
    runs: Sequence[Run], sweep_for: Callable[[Run, str], Sweep], *, executor: str = "auto"
) -> SubmitResult:
    """Submit again every run of ``runs`` that failed or ran out of time; it resumes from its last checkpoint.

    Cancelled runs are left alone: someone stopped them on purpose.
    """
    from prove_jobs.status import RunState, collect_status

    ended = (RunState.FAILED, RunState.TIMEOUT)
    to_submit = [(sweep_for(s.run, s.meta.sweep_file if s.meta else ""), s.run)
                 for s in collect_status(runs).statuses if s.state in ended]
    result = SubmitResult()
    for sweep, sweep_runs in _by_sweep(to_submit):
        outcome = submit(sweep, sweep_runs, executor=executor, skip_done=True)
        result.submitted += outcome.submitted
        result.skipped += outcome.skipped
        result.conflicts += outcome.conflicts
    return result


def check_data_root(root: Path) -> None:
    if not root.is_dir():
        raise RunError(f"{root}: data root does not exist (create it, or pass --data-root)")
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunError(f"{root}: data root is not writable by {current_user()}")


def _fresh_meta(sweep: Sweep, item: RenderedRun, kind: str) -> RunMeta:
    previous = read_meta_quietly(item.run.run_dir)
    return RunMeta(
        model=item.run.model,
        variant=item.run.variant,
        sweep_file=str(sweep.path),
        config_hash=item.config_hash,
        executor=kind,
        user=current_user(),
        host=current_host(),
        pid=os.getpid(),  # the submitter's, until the job id is known: the claim is live meanwhile
        submitted_at=now(),
        max_iters=sweep.variant(item.run.variant).max_iters,
        attempts=previous.attempts if previous else 0,
        lock_mode=sweep.sharing.lock_mode,
    )


def _submitter_pid(kind: str, job_id: str) -> dict[str, Any]:
    # A local job id is the pid of submitit's controller: alive while the job is.
    return {"pid": int(job_id)} if kind == "local" else {}


def _queue(kind: str, sweep: Sweep, resources: Resources, runs: Sequence[Run]) -> list[Any]:
    folder = sweep.data_root / SUBMITIT_DIR / "%j"
    executor = make_executor(kind, folder, resources, job_name=_job_name(sweep, runs))
    try:
        with executor.batch():
            jobs = [executor.submit(_training_job(sweep, run, resources)) for run in runs]
    except ProveJobsError:
        raise
    except Exception as exc:  # submitit wraps sbatch failures in its own errors
        _mark_failed(runs, f"submission failed: {exc}")
        raise ProveJobsError(f"submitting {len(runs)} run(s) to {kind} failed: {_one_line(exc)}") from None
    return jobs


def short_limit_warning(resources: Resources, items: Sequence[RenderedRun]) -> str:
    return (f"timeout_min = {resources.timeout_min} ({', '.join(i.run.name for i in items)}): SLURM sends the "
            f"checkpoint signal {SIGNAL_DELAY_S} s before the limit, up to {SIGNAL_JITTER_S} s earlier; these jobs "
            "would be stopped and requeued almost at once, until max_requeues. Give them at least 4 minutes.")


def _job_name(sweep: Sweep, runs: Sequence[Run]) -> str:
    return runs[0].name if len(runs) == 1 else f"prove:{sweep.name}"


def _mark_failed(runs: Sequence[Run], error: str) -> None:
    for run in runs:
        update_meta(run.run_dir, failed_at=now(), error=error[:500])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def make_executor(kind: str, folder: Path, resources: Resources, *, job_name: str,
                  after_job: str | None = None) -> Any:
    """A submitit executor for ``kind`` with the sweep's resources applied.

    ``after_job``: start only once that SLURM job has ended, however it ended (afterany).
    """
    import submitit

    if kind == "local":
        local = DetachedLocalExecutor(folder=folder, max_num_timeout=resources.max_requeues)
        local.update_parameters(timeout_min=resources.timeout_min, setup=list(resources.setup))
        return local
    slurm = submitit.SlurmExecutor(folder=folder, max_num_timeout=resources.max_requeues)
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": resources.timeout_min,
        "signal_delay_s": SIGNAL_DELAY_S,
        "cpus_per_task": resources.cpus_per_task,
        "ntasks_per_node": 1,
        "setup": list(resources.setup),
        "additional_parameters": sbatch_extra(resources.extra_sbatch),
    }
    if after_job is not None:
        params["additional_parameters"]["dependency"] = f"afterany:{after_job}"
    # --gres rather than --gpus-per-node: older SLURM and gres-only clusters accept it everywhere.
    if resources.gpus_per_node:
        params["gres"] = f"gpu:{resources.gpus_per_node}"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(resources, key) is not None:
            params[key] = getattr(resources, key)
    if resources.mem_gb is not None:
        params["mem"] = f"{int(resources.mem_gb * 1024)}M"
    slurm.update_parameters(**params)
    return slurm


def sbatch_extra(lines: Sequence[str]) -> dict[str, Any]:
    """``["--exclusive", "--reservation=x"]`` (``#SBATCH`` prefix optional) -> submitit's dict."""
    extra: dict[str, Any] = {}
    for line in lines:
        text = line.removeprefix("#SBATCH").strip()
        if not text.startswith("--"):
            raise ProveJobsError(f"extra_sbatch: {line!r} is not a long sbatch option like '--exclusive'")
        key, sep, value = text[2:].partition("=")
        extra[key.replace("-", "_")] = value if sep else True
    return extra


class _DetachedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """The controller as a daemon: its own session, and none of the caller's file descriptors.

    Inheriting stdout/stderr would keep a pipe open for as long as the job runs, so that
    `prove-jobs submit | tee log` (or any caller reading its output) would hang until the
    training ends. The controller's own messages go to ``controller.log`` in its job folder.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["start_new_session"] = True
        kwargs["stdin"] = subprocess.DEVNULL
        command = args[0] if args else kwargs.get("args")
        log = None
        if isinstance(command, list) and command:  # [python, -m, submitit.local._local, folder]
            folder = Path(command[-1])
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / "controller.log", "ab")  # noqa: SIM115  # the child keeps it; we close ours
        kwargs["stdout"] = log if log is not None else subprocess.DEVNULL
        kwargs["stderr"] = subprocess.STDOUT if log is not None else subprocess.DEVNULL
        try:
            super().__init__(*args, **kwargs)
        finally:
            if log is not None:
                log.close()


_DETACHED_SUBPROCESS = types.SimpleNamespace(Popen=_DetachedPopen)


def _import_local() -> Any:
    from submitit.local import local

    return local


class DetachedLocalExecutor(_import_local().LocalExecutor):  # type: ignore[misc]
    """submitit's LocalExecutor whose jobs survive the submitting command and its terminal.

    Why: submitit starts the local controller in the caller's session, so closing the
    terminal (SIGHUP) or Ctrl-C in ``submit --wait`` kills every training. A new session
    keeps them apart; ``prove-jobs cancel`` signals the session's process group instead.
    """

    def _submit_command(self, command: str) -> Any:
        # submitit.local.start_controller calls `subprocess.Popen` with no way to pass
        # start_new_session; swap the name it looks up, for this call only.
        local = _import_local()
        original = local.subprocess
        local.subprocess = _DETACHED_SUBPROCESS
        try:
            return super()._submit_command(command)
        finally:
            local.subprocess = original


def wait(
    runs: Sequence[Run],
    *,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    on_poll: Callable[[], None] | None = None,
) -> dict[Run, RunMeta | None]:
    """Block until no run has a live job; returns each run's final metadata."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        metas = {run: read_meta(run.run_dir) for run in runs}
        if not any(meta is not None and _still_running(run.run_dir, meta) for run, meta in metas.items()):
            return metas
        if deadline is not None and time.monotonic() > deadline:
            raise ProveJobsError(f"timed out after {timeout_s:.0f} s waiting for {len(runs)} run(s)")
        if on_poll is not None:
            on_poll()
        time.sleep(poll_s)


def _still_running(run_dir: Path, meta: RunMeta) -> bool:
    alive = claim_alive(meta, scheduler_states_for(meta))
    if alive is False:
        # A process whose main thread is gone reads as dead (zombie leader) while its other threads
        # (torch's) still exit; its files, the training lock with them, close with the last one.
        return training_lock_held(run_dir, meta.lock_mode) is True
    # Unknown: keep waiting on a SLURM job (the scheduler may answer next time); a local
    # job on another host cannot be followed from here.
    return alive is True or (alive is None and meta.executor == "slurm")


def cancel(runs: Sequence[Run]) -> list[Run]:
    """Cancel the live jobs of ``runs`` (one scancel for all SLURM jobs); returns those cancelled."""
    live = [(run, meta) for run in runs if (meta := read_meta(run.run_dir)) is not None and job_alive(meta)]
    slurm_ids = [meta.job_id for _, meta in live if meta.executor == "slurm" and meta.job_id]
    if slurm_ids:
        from prove_jobs.scheduler import scancel

        scancel(slurm_ids)
    for _, meta in live:
        if meta.executor == "local":
            if meta.host != current_host():
                raise RunError(f"{meta.model}: local job on {meta.host}; cancel it from there")
            _kill_local(meta)
    for run, _ in live:
        update_meta(run.run_dir, cancelled_at=now())
    return [run for run, _ in live]


def _kill_local(meta: RunMeta, grace_s: float = 10.0) -> None:
    """Stop a local job's whole process group: SIGINT, then SIGKILL after ``grace_s``.

    Not SIGTERM: submitit's task processes ignore it ("Bypassing signal SIGTERM"), as SLURM
    sends it ahead of a preemption; SIGINT is what submitit's own LocalJob.cancel sends.
    """
    assert meta.job_id is not None
    # The controller leads its own session (see DetachedLocalExecutor): signal the group.
    groups = set()
    for pid in {int(meta.job_id), meta.pid or int(meta.job_id)}:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def describe_command(kind: str, sweep: Sweep, resources: Resources, runs: Sequence[Run]) -> str:
    """What would be queued, as a reader would type it (for ``--dry-run``)."""
    if kind == "local":
        return f"{len(runs)} local process(es), {resources.cpus_per_task} thread(s) each"
    parts = ["sbatch", f"--job-name={_job_name(sweep, runs)}", f"--time={resources.timeout_min}",
             f"--signal=USR2@{SIGNAL_DELAY_S}"]
    if len(runs) > 1:
        parts.append(f"--array=0-{len(runs) - 1}")
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(resources, key) is not None:
            parts.append(f"--{key}={getattr(resources, key)}")
    if resources.gpus_per_node:
        parts.append(f"--gres=gpu:{resources.gpus_per_node}")
    parts.append(f"--cpus-per-task={resources.cpus_per_task}")
    if resources.mem_gb is not None:
        parts.append(f"--mem={int(resources.mem_gb * 1024)}M")
    parts += [f"{k}" for k in resources.extra_sbatch]
    return shlex.join(parts)

