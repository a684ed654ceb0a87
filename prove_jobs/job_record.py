"""What a training job records in its run's claim: a fresh claim, a take-over, its start (and the restart cap),
and how its training ended.

The bookkeeping around the training call (:class:`prove_jobs.payload.TrainingJob`), beside the claims
(:mod:`prove_jobs.claims`). Every write checks, under the run's mutex, that the claim is still the
submission's (its ``token``): a claim that moved on raises ``ClaimMoved`` and nothing is written.
Imports nothing heavy: ``submit`` builds its claims here on the login node.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prove_jobs.errors import ClaimMoved, RunError
from prove_jobs.identity import boot_id, current_host, current_user, process_start
from prove_jobs.metadata import RunMeta, check_token, locked, now, read_meta, update_meta, write_meta
from prove_jobs.runs import CONFIG_DIR, model_of_dir, seed_of_dir

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from prove_jobs.payload import TakeOver

RESUBMIT_HINT = "`prove-jobs resubmit --failed` goes on from the last checkpoint"


def fresh_claim(*, model: str, variant: str, seed: int | None, sweep_file: str, config_hash: str, executor: str,
                token: str, max_iters: int | None, attempts: int, lock_mode: str, job_id: str | None = None,
                layout: str = "", gpus: int | None = None) -> RunMeta:
    """A new claim on a run by this user and this process (``submit``'s, or a take-over job's): live as this
    process until a job id says otherwise."""
    return RunMeta(model=model, variant=variant, seed=seed, sweep_file=sweep_file, config_hash=config_hash,
                   executor=executor, user=current_user(), host=current_host(), pid=os.getpid(),
                   pid_start=process_start(os.getpid()), boot_id=boot_id(), submitted_at=now(), job_id=job_id,
                   token=token, layout=layout, gpus=gpus, max_iters=max_iters, attempts=attempts, lock_mode=lock_mode)


def record(run_dir: Path, token: str, wait_s: float | None = None, **changes: Any) -> RunMeta:
    """Update the run's metadata, only while its claim is still the submission ``token``'s."""
    if wait_s is None:
        return update_meta(run_dir, token=token, **changes)
    return update_meta(run_dir, token=token, wait_s=wait_s, **changes)


def owns(meta: RunMeta, token: str) -> bool:
    """Is ``meta`` the claim of the submission ``token``? A job pickled without one (an older prove-jobs) goes by
    its scheduler job id and user."""
    if token:
        return meta.token == token
    return meta.job_id == scheduler_job_id() and meta.user == current_user()


def take_over(run_dir: Path, take: TakeOver, *, token: str, lock_mode: str) -> str | None:
    """Claim the run the job we waited for held (``resubmit --after-holder``): ``None`` once it is claimed now,
    ``""`` when it was already ours (this job took it over, then SLURM requeued it), else why there is nothing
    to train."""
    from prove_jobs.claims import claim_alive, claim_is_open, open_slurm_jobs
    from prove_jobs.conflicts import clear_conflict
    from prove_jobs.fsafe import atomic_write_text
    from prove_jobs.scheduler import ask_or_none

    meta = read_meta(run_dir)
    # The scheduler is asked before the mutex is taken: a slow controller never holds up the run's writers.
    jobs = ask_or_none(open_slurm_jobs([meta]))
    with locked(run_dir):
        meta = read_meta(run_dir)
        if meta is not None and claim_is_open(meta) and owns(meta, token):
            return ""  # ours already: this job took the run over, then SLURM requeued it
        if meta is not None and meta.finished_at is not None and meta.config_hash == take.config_hash:
            clear_conflict(run_dir)
            return f"already completed by {meta.user} (job {meta.job_id}): not trained again"
        if meta is not None and meta.finished_at is not None:
            raise RunError(f"{run_dir}: completed by {meta.user} with another config (hash {meta.config_hash}, "
                           f"ours {take.config_hash}); not trained over")
        if (meta is not None and claim_is_open(meta) and meta.job_id != take.holder_job_id
                and claim_alive(meta, jobs) is not False):
            # taken meanwhile (another submit of ours, or a third user): leave it to them
            return f"held by {meta.user} (job {meta.job_id}) since we were queued: not started"
        write_meta(run_dir, fresh_claim(
            model=meta.model if meta else model_of_dir(Path(run_dir)), variant=meta.variant if meta else "",
            seed=meta.seed if meta else seed_of_dir(Path(run_dir).name), sweep_file=take.sweep_file,
            config_hash=take.config_hash, executor="slurm", token=token, job_id=scheduler_job_id(),
            max_iters=meta.max_iters if meta else None, attempts=meta.attempts if meta else 0, lock_mode=lock_mode))
        clear_conflict(run_dir)
        for name, text in take.files:  # what this job was queued to train (its digests are in the job's `rendered`)
            atomic_write_text(run_dir / CONFIG_DIR / name, text, mode=0o644)
    return None


def record_start(run_dir: Path, token: str, max_restarts: int | None) -> RunMeta:
    """Record that the submission ``token`` starts training now; raises ``RunError`` (recorded) past the restart
    cap, ``ClaimMoved`` when the claim is no longer the submission's."""
    from prove_jobs.distributed import node_list
    from prove_jobs.lost_start import lost_start

    with locked(run_dir):
        meta = read_meta(run_dir)
        if meta is None:
            raise RunError(f"{run_dir}: no run metadata; submit the run with prove-jobs first")
        check_token(run_dir, meta, token)
        restarts = restarts_so_far(meta.starts)
        job_id = scheduler_job_id() or meta.job_id
        if max_restarts is not None and restarts > max_restarts:
            # A job that is stopped again and again (preempted, out of time, its node failing) must
            # not loop forever: SLURM's own requeue on preemption knows no limit.
            message = (f"not started again: this would be restart {restarts} and the sweep's "
                       f"resources.max_requeues is {max_restarts}; {RESUBMIT_HINT}")
            record(run_dir, token, failed_at=now(), error=message, requeued_at=None, job_id=job_id)
            raise RunError(f"{run_dir}: {message}")
        return record(
            run_dir,
            token,
            lost_start=lost_start(meta, restarts) if restarts else None,
            started_at=now(),
            pid=os.getpid(),
            pid_start=process_start(os.getpid()),
            boot_id=boot_id(),
            host=current_host(),
            nodes=node_list(dict(os.environ)),
            attempts=meta.attempts + 1,
            starts=meta.starts + 1,
            restarts=restarts,
            requeued_at=None,
            job_id=job_id,
            failed_at=None,
            error=None,
        )


def record_end(run_dir: Path, token: str, exc: Exception, max_restarts: int | None) -> None:
    """Record how a training that raised ``exc`` ended: failed with its error, or nothing for a job that
    checkpointed and was requeued; nothing either once the claim is no longer the submission's."""
    from prove_jobs.distributed import lost_contact, slurm_rank

    # submitit's signal handler raises where training happens to be: inside a bare
    # `except:` (mmengine's config formatting, run at every checkpoint) its exception
    # comes out wrapped in another one. The chain says what really happened.
    cause = {type(e).__name__: e for e in exception_chain(exc)}
    with contextlib.suppress(ClaimMoved):
        if "UncompletedJobError" in cause:  # "timed-out too many times": not requeued
            error = (f"not requeued again ({cause['UncompletedJobError']}): the sweep's "
                     f"resources.max_requeues is {max_restarts}; {RESUBMIT_HINT}")
            record(run_dir, token, failed_at=now(), error=error[:500], requeued_at=None)
        elif "TrainingDiverged" in cause:  # its own words: `diverged at iteration k (loss nan)...`
            record(run_dir, token, failed_at=now(), error=str(cause["TrainingDiverged"])[:500])
        elif "SystemExit" not in cause:  # SystemExit: checkpointed and requeued, not a failure
            lost = lost_contact(exc, slurm_rank())
            said = f"{lost}: " if lost else ""
            record(run_dir, token, failed_at=now(), error=f"{said}{type(exc).__name__}: {exc}"[:500])


def exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def restarts_so_far(starts: int) -> int:
    """0 for the first start of a submission; n for its n-th start again after a stop.

    SLURM's own count where the job runs under SLURM (``SLURM_RESTART_COUNT``: requeues of this
    job id, including those that never reached the payload), else ``starts``, the starts recorded under
    this submission's token. Never from comparing times: the login node's clock (``submitted_at``) and
    a compute node's (``started_at``) may differ by more than a job's whole run.
    """
    count = os.environ.get("SLURM_RESTART_COUNT", "") if os.environ.get("SLURM_JOB_ID") else ""
    return int(count) if count.isdigit() else starts


def scheduler_job_id() -> str | None:
    """This job's id as the scheduler knows it: an array task as ``<array>_<task>``; submitit's local job id."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or None
