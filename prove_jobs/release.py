"""``prove-jobs release``: after the fix, the held tasks of a submission train, and the runs that failed train again.

A held task trains what was rendered when it was queued: its job carries the digests of its ``prove/`` files
and refuses any other (prove_jobs.rendered_check). So a fix in the environment (a dataset path, a package on
the nodes) and a fix in a template are released differently, run by run:

* its rendering unchanged (the fix was elsewhere): ``scontrol release`` of the task; it keeps its place and
  its age in the queue;
* its rendering changed (a template, a variant, the sweep): the task is cancelled (``scancel``) and the run
  submitted again, rendered anew, in one new submission with the runs that failed; that submission has its
  own first runs, and is held again if the fix did not fix it.

The runs that failed (those whose failures held their submission, and any other of it that failed) are
submitted again in every case, resuming from their last checkpoint as ``resubmit --failed`` does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prove_jobs.errors import ProveJobsError
from prove_jobs.hold import held_tasks, scontrol
from prove_jobs.identity import current_user
from prove_jobs.runs import CONFIG_DIR, Run
from prove_jobs.spec import Sweep
from prove_jobs.states import RunState, slurm_alive
from prove_jobs.submit import SubmitResult, submit

CANCEL_SEEN_S = 30.0  # how long to wait for squeue to show a cancelled task ended, before it is submitted again
HEADER = "# Rendered by prove-jobs for "  # render.render_run's first line names the sweep file as it was given


@dataclass
class ReleaseResult:
    """What ``release`` did with each held task and failed run of the sweep's held submissions."""

    released: list[tuple[str, Run]] = field(default_factory=list)  # (job id, run): released in place
    cancelled: list[tuple[str, Run]] = field(default_factory=list)  # its rendering changed: cancelled, submitted again
    submitted: SubmitResult = field(default_factory=SubmitResult)  # the changed and the failed runs, rendered anew
    refused: list[str] = field(default_factory=list)  # what SLURM (or the claim's owner) did not let us do
    arrays: list[str] = field(default_factory=list)  # the held submissions

    @property
    def runs(self) -> list[Run]:
        """The runs that will train now (for ``--wait``)."""
        return [run for _, run in self.released] + [s.run for s in self.submitted.submitted]


def release_held(sweep: Sweep, runs: Sequence[Run]) -> ReleaseResult:
    """Release the held tasks among ``runs`` (squeue: ``JobHeldUser``) and submit again the failed runs of their
    submissions; see the module's docstring for which tasks are released in place."""
    from prove_jobs.status import collect_status

    statuses = collect_status(runs).statuses
    result = ReleaseResult()
    arrays = held_tasks(statuses)
    result.arrays = sorted(arrays)
    if not arrays:
        return result
    in_place, changed = [], []
    for group in arrays.values():
        for s in group:
            assert s.meta is not None and s.job_id is not None  # held_tasks: SLURM tasks with metadata
            if s.meta.user != current_user():
                result.refused.append(f"{s.run.name}: held job {s.job_id} is {s.meta.user}'s; only they can release it")
            elif unchanged(sweep, s.run):
                in_place.append((s.job_id, s.run))
            else:
                changed.append((s.job_id, s.run))
    failed = [s.run for s in statuses if s.state in (RunState.FAILED, RunState.TIMEOUT) and s.meta is not None
              and s.meta.executor == "slurm" and (s.job_id or "").split("_")[0] in arrays]
    if in_place:
        result.refused += scontrol("release", [job for job, _ in in_place])
        result.released = in_place if not result.refused else []
    if changed:
        from prove_jobs.scheduler import scancel

        not_cancelled = scancel([job for job, _ in changed])
        result.refused += [f"{run.name}: job {job} not cancelled: {not_cancelled[job]}" for job, run in changed
                           if job in not_cancelled]
        result.cancelled = [(job, run) for job, run in changed if job not in not_cancelled]
        _wait_ended([job for job, _ in result.cancelled])
    again = [run for _, run in result.cancelled] + failed
    if again:
        # named: a task cancelled here is not "cancelled on purpose" (submit would leave it alone)
        result.submitted = submit(sweep, again, executor="slurm", skip_done=True, named=[r.model for r in again])
    return result


def unchanged(sweep: Sweep, run: Run) -> bool:
    """Does ``run`` render now as its queued task's ``prove/`` files say (the header naming the sweep file aside)?"""
    from prove_jobs.render import render_run, rendered_files
    from prove_jobs.safe_read import read_capped

    rendered = render_run(sweep, run)
    for name, text in rendered_files(rendered):
        try:
            on_disk = read_capped(run.run_dir / CONFIG_DIR / name, below=run.run_dir).decode()
        except (OSError, UnicodeDecodeError, ProveJobsError):  # unreadable: not the rendering we would queue
            return False
        if _body(on_disk) != _body(text):
            return False
    return True


def _body(text: str) -> str:
    return text.split("\n", 1)[1] if text.startswith(HEADER) else text


def _wait_ended(job_ids: Sequence[str], wait_s: float = CANCEL_SEEN_S) -> None:
    """Until squeue says the cancelled tasks ended: a submit that still saw one queued would take it for ours,
    alive, and not queue its run again."""
    from prove_jobs.scheduler import ask_or_none

    wanted = list(job_ids)
    deadline = time.monotonic() + wait_s
    while wanted and time.monotonic() < deadline:
        answer = ask_or_none(wanted)
        if answer is None:
            return
        infos = [answer.get(j) for j in wanted]
        if not any(info is not None and slurm_alive(info.state, from_accounting=info.from_accounting)
                   for info in infos):
            return
        time.sleep(1.0)
