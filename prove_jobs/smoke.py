"""``submit --smoke N``: each distinct (model, variant, resources) of a submission trains N iterations and one
validation before the sweep is queued; one that fails stops the whole submission, and nothing of it is written.

The smoke trains the run's own rendering (``model.py``, ``config.py``) under a third layer (:func:`smoke_layer`:
``max_iters = val_interval = N``, no checkpoint hook) in a scratch folder, ``smoke/<stamp>/<VARIANT>__<model>/``
in the user's own job folder (``<data_root>/.prove-jobs/submitit/<user>/``: only she writes there, so the job
reads its config files without the digest check a group-writable run dir needs). No run dir is touched: no
claim, no log, no checkpoint, no start counted. A smoke that passes leaves nothing; one that fails keeps its
folder (the training's log) and its job's output, and the error line names both.

Smoke first, then the submission (not the array queued held and released after the smoke): a failed smoke
then leaves no claim, no held job and no run marked cancelled behind, and colleagues see no run as taken
meanwhile. The price is the smoke's own time in the queue before the array is queued.

Seeds collapse: they change no code path. The smoke jobs go to the sweep's partition, or ``--smoke-partition``
(a debug partition with a short wait), as one array per resource set, and are followed by their result files
and one ``squeue`` every few seconds (through ``scheduler.call``), never one query per job.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from prove_jobs.errors import ProveJobsError, RunError
from prove_jobs.fsafe import atomic_write_text
from prove_jobs.identity import current_user, pid_alive
from prove_jobs.jobdir import check_job_folder
from prove_jobs.runs import Run
from prove_jobs.spec import Resources, Sweep

TYPE_CHECKING = False  # not typing's: see cli/parser.py
if TYPE_CHECKING:
    from prove_jobs.submit import SubmitResult
    from prove_jobs.weight_cache import Progress

SMOKE_DIR = "smoke"
SMOKE_FILE = "smoke.py"
RESULT_FILE = "smoke_result.json"
WORK_DIR = "work"
POLL_S = 2.0
ASK_EVERY_S = 10.0  # squeue at most this often while smoke jobs run: a job that ended without a result failed


def combinations(sweep: Sweep, runs: Sequence[Run]) -> list[Run]:
    """One run (the first) of each distinct (model, variant, resources) among ``runs``."""
    seen: dict[tuple[str, str, Resources], Run] = {}
    for run in runs:
        seen.setdefault((run.model, run.variant, sweep.resources_for(run)), run)
    return list(seen.values())


def smoke_layer(iters: int) -> str:
    """The config layer over a run's ``config.py``: ``iters`` iterations, one validation at the last, nothing saved."""
    return ("# prove-jobs submit --smoke: the run's config, trained a few iterations and validated once; "
            "no checkpoint saved\n"
            "_base_ = ['./config.py']\n"
            f"train_cfg = dict(max_iters={iters}, val_interval={iters})\n"
            "default_hooks = dict(checkpoint=None)\n")


@dataclass(frozen=True)
class SmokeJob:
    """The submitit callable of one smoke test: trains ``folder/smoke.py`` in ``folder/work``, writes its result."""

    folder: str
    threads: int | None = None

    def __call__(self) -> str:
        from prove_jobs.distributed import slurm_rank
        from prove_jobs.payload import train

        folder = Path(self.folder)
        rank = slurm_rank()
        started = time.monotonic()
        try:
            final_iter = train(folder / SMOKE_FILE, folder / WORK_DIR, threads=self.threads, rank=rank)
        except Exception as exc:
            if rank.leader:
                error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
                atomic_write_text(folder / RESULT_FILE, json.dumps({"ok": False, "error": error}))
            raise
        if rank.leader:
            atomic_write_text(folder / RESULT_FILE, json.dumps(
                {"ok": True, "iter": final_iter, "seconds": round(time.monotonic() - started, 1)}))
        return f"smoke test passed at iter {final_iter}"


@dataclass(frozen=True)
class SmokeOutcome:
    """How one combination's smoke test went."""

    run: Run  # the combination's first run
    ok: bool
    error: str = ""
    job_id: str = ""
    folder: Path | None = None  # kept when it failed (the training's log), else removed
    seconds: float | None = None

    def line(self) -> str:
        if self.ok:
            took = f" in {self.seconds:.0f} s" if self.seconds is not None else ""
            return f"smoke test passed: {self.run.name}{took} (job {self.job_id})"
        return f"smoke test failed: {self.run.name}: {self.error} (job {self.job_id}; its files: {self.folder})"


@dataclass
class SmokeResult:
    outcomes: list[SmokeOutcome] = field(default_factory=list)
    planned: list[Run] = field(default_factory=list)  # a dry run: the combinations a real submit would test

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)


def smoke_then_submit(sweep: Sweep, runs: Sequence[Run], iters: int, *, partition: str | None = None,
                      executor: str = "auto", dry_run: bool = False, skip_done: bool = False,
                      named: Sequence[str] = (), progress: Progress | None = None,
                      on_poll: Callable[[str], None] = lambda line: None) -> tuple[SmokeResult, SubmitResult | None]:
    """``submit --smoke``: the smoke tests, then, only if every one passed, the submission (``None`` otherwise).
    A dry run tests nothing: it lists the combinations (``planned``) beside what would be submitted."""
    from prove_jobs.submit import submit

    if dry_run:
        planned = SmokeResult(planned=combinations(sweep, runs))
        return planned, submit(sweep, runs, executor=executor, dry_run=True, skip_done=skip_done, named=named,
                               progress=progress)
    smoke = smoke_test(sweep, runs, iters, executor=executor, partition=partition, skip_done=skip_done,
                       on_poll=on_poll)
    if not smoke.passed:
        return smoke, None
    return smoke, submit(sweep, runs, executor=executor, skip_done=skip_done, named=named, progress=progress)


def smoke_test(sweep: Sweep, runs: Sequence[Run], iters: int, *, executor: str = "auto",
               partition: str | None = None, skip_done: bool = False, timeout_s: float | None = None,
               on_poll: Callable[[str], None] = lambda line: None) -> SmokeResult:
    """Train each combination of ``runs`` ``iters`` iterations and one validation; wait for all of them."""
    from prove_jobs.claims import refuse_finished
    from prove_jobs.metadata import read_meta_quietly
    from prove_jobs.preflight import check_data_root, check_dataset_root, check_training_stack, ready_weights
    from prove_jobs.render import render_run, rendered_files
    from prove_jobs.submit import choose_executor, sharing_umask

    if iters < 1:
        raise ProveJobsError(f"--smoke {iters}: give the iterations each smoke test trains (1 or more)")
    kind = choose_executor(executor, sweep, runs)
    todo = []
    for run in runs:
        try:
            refuse_finished(run, sweep.recipe(run).max_iters)
        except RunError:
            if not skip_done:
                raise
            continue
        meta = read_meta_quietly(run.run_dir)
        if not (skip_done and meta is not None and meta.finished_at is not None):
            todo.append(run)
    picks = combinations(sweep, todo)
    if not picks:
        return SmokeResult()
    check_data_root(sweep.data_root)
    check_dataset_root(sweep)
    resources = {run: _smoke_resources(sweep.resources_for(run), partition) for run in picks}
    if kind == "local":
        check_training_stack(list(resources.values()))
    rendered = [render_run(sweep, run) for run in picks]
    ready_weights(sweep, rendered)
    check_job_folder(sweep.data_root, create=True)
    base = sweep.data_root / ".prove-jobs" / "submitit" / current_user() / SMOKE_DIR / \
        f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    folders: dict[Run, Path] = {}
    with sharing_umask(sweep):
        for item in rendered:
            folder = base / f"{item.run.variant}__{item.run.model}"
            folder.mkdir(parents=True, mode=0o750)
            for name, text in (*rendered_files(item), (SMOKE_FILE, smoke_layer(iters))):
                atomic_write_text(folder / name, text)
            folders[item.run] = folder
    jobs = _queue(sweep, kind, picks, resources, folders)
    try:
        outcomes = _follow(kind, jobs, folders, timeout_s, on_poll)
    except BaseException:
        _stop(kind, [job_id for _, job_id in jobs])
        raise
    for outcome in outcomes:
        if outcome.ok and outcome.folder is not None:
            shutil.rmtree(outcome.folder, ignore_errors=True)
    _remove_if_empty(base)
    return SmokeResult([replace(o, folder=None) if o.ok else o for o in outcomes])


def _smoke_resources(resources: Resources, partition: str | None) -> Resources:
    # the smoke's own array: every task at once (max_running throttles the sweep, not its test)
    return replace(resources, partition=partition or resources.partition, max_running=None)


def _queue(sweep: Sweep, kind: str, picks: Sequence[Run], resources: dict[Run, Resources],
           folders: dict[Run, Path]) -> list[tuple[Run, str]]:
    from prove_jobs.executors import job_folder, make_executor
    from prove_jobs.submit import private_umask

    groups: dict[Resources, list[Run]] = {}
    for run in picks:
        groups.setdefault(resources[run], []).append(run)
    queued: list[tuple[Run, str]] = []
    for res, group in groups.items():
        executor = make_executor(kind, job_folder(sweep), res, job_name=f"smoke:{sweep.name}")
        try:
            with private_umask(sweep), executor.batch():
                jobs = [executor.submit(SmokeJob(str(folders[run]), res.cpus_per_task)) for run in group]
        except ProveJobsError:
            raise
        except Exception as exc:  # submitit wraps sbatch failures in its own errors
            raise ProveJobsError(f"submitting the smoke tests to {kind} failed: {' '.join(str(exc).split())[:300]}"
                                 ) from None
        queued += [(run, str(job.job_id)) for run, job in zip(group, jobs, strict=True)]
    return queued


def _follow(kind: str, jobs: Sequence[tuple[Run, str]], folders: dict[Run, Path], timeout_s: float | None,
            on_poll: Callable[[str], None]) -> list[SmokeOutcome]:
    """Each job's outcome: its result file, or, for a job the scheduler says ended without one, a failure."""
    done: dict[Run, SmokeOutcome] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_ask = time.monotonic()
    while len(done) < len(jobs):
        for run, job_id in jobs:
            if run not in done and (outcome := _result(run, job_id, folders[run])) is not None:
                done[run] = outcome
        waiting = [(run, job_id) for run, job_id in jobs if run not in done]
        if not waiting:
            break
        on_poll(f"smoke tests: {len(done)} of {len(jobs)} done")
        if time.monotonic() - last_ask >= ASK_EVERY_S:
            last_ask = time.monotonic()
            for run, job_id, why in _ended_without_result(kind, waiting):
                done[run] = _result(run, job_id, folders[run]) or SmokeOutcome(
                    run, False, f"{why}; see {_job_stderr(folders[run], job_id)}", job_id, folders[run])
        if deadline is not None and time.monotonic() > deadline:
            raise ProveJobsError(f"smoke tests: {len(waiting)} not done within {timeout_s:g} s; nothing submitted")
        time.sleep(POLL_S)
    return [done[run] for run, _ in jobs]


def _result(run: Run, job_id: str, folder: Path) -> SmokeOutcome | None:
    try:
        data = json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    seconds = data.get("seconds")
    return SmokeOutcome(run, data.get("ok") is True, str(data.get("error", "")), job_id, folder,
                        float(seconds) if isinstance(seconds, (int, float)) else None)


def _ended_without_result(kind: str, waiting: Sequence[tuple[Run, str]]) -> list[tuple[Run, str, str]]:
    if kind == "local":
        return [(run, job_id, "its process ended without a result") for run, job_id in waiting
                if not pid_alive(int(job_id))]
    from prove_jobs.scheduler import ask_or_none
    from prove_jobs.states import slurm_alive

    answer = ask_or_none(job_id for _, job_id in waiting)
    if answer is None:
        return []  # asked again in a while
    ended = []
    for run, job_id in waiting:
        info = answer.get(job_id)
        if info is None or not slurm_alive(info.state, from_accounting=info.from_accounting):
            ended.append((run, job_id, f"SLURM ended job {job_id} ({info.state if info else 'gone'}) without a result"))
    return ended


def _job_stderr(folder: Path, job_id: str) -> Path:
    return folder.parents[2] / job_id / f"{job_id}_0_log.err"


def _stop(kind: str, job_ids: Sequence[str]) -> None:
    """Interrupted (Ctrl-C, a timeout): the smoke jobs go too."""
    import signal

    if kind == "slurm":
        from prove_jobs.scheduler import scancel

        scancel(list(job_ids))
        return
    for job_id in job_ids:
        try:
            os.killpg(int(job_id), signal.SIGTERM)
        except (OSError, ValueError):
            sys.stderr.write(f"prove-jobs: smoke job {job_id} not stopped\n")


def _remove_if_empty(folder: Path) -> None:
    for path in (folder, folder.parent):
        try:
            path.rmdir()
        except OSError:
            return
