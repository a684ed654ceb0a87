"""Light on the controller: the scheduler asked at most every N seconds, however often a view redraws.

``status --watch 2`` redraws from the logs every 2 s; asking squeue at each frame is 1,800 calls an hour per
watching user, which sites forbid. :class:`PacedScheduler` asks (one squeue for the view's open jobs, then
one sacct for those squeue forgot: :func:`prove_jobs.scheduler.ask`) at most every ``every_s`` seconds and
hands out its last answer in between, a failure included (a controller that did not answer is not asked
again at once, each time up to its timeout). :func:`fresher` lets a run's own record, newer than the
answer, win over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from prove_jobs.errors import SchedulerUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.metadata import RunMeta
    from prove_jobs.scheduler import Answer, JobInfo

DEFAULT_EVERY_S = 30.0  # docs/cluster.md, "Polling"; --scheduler-every


class PacedScheduler:
    """``ask(job_ids)``, at most once every ``every_s`` seconds; the last answer (or failure) in between.

    A job id the last answer was not asked about (a resubmission since) waits for the next question: it is
    not in ``Answer.asked``, so nobody reads it as gone.
    """

    def __init__(self, every_s: float = DEFAULT_EVERY_S, ask: Callable[[Iterable[str]], Answer] | None = None) -> None:
        self.every_s = every_s
        self._ask = ask
        self._asked_at: float | None = None  # time.monotonic() of the last question
        self._answer: Answer | None = None
        self._error: SchedulerUnavailable | None = None

    def ask(self, job_ids: Iterable[str]) -> Answer:
        """The scheduler's answer for ``job_ids``: asked now if the last question is ``every_s`` old (or
        none was asked), else the last one; raises ``SchedulerUnavailable`` as the question did."""
        now = time.monotonic()
        if self._asked_at is None or now - self._asked_at >= self.every_s:
            if self._ask is None:
                from prove_jobs.scheduler import ask

                self._ask = ask
            self._asked_at = now
            try:
                self._answer, self._error = self._ask(job_ids), None
            except SchedulerUnavailable as exc:
                self._answer, self._error = None, exc
        if self._error is not None:
            raise self._error
        assert self._answer is not None
        return self._answer

    def age_s(self) -> float | None:
        """Seconds since the scheduler was last asked; ``None`` before the first question."""
        return None if self._asked_at is None else time.monotonic() - self._asked_at

    def caption(self) -> str:
        """``scheduler asked 12 s ago (at most every 30 s)``: the watch's footer; "" while none was asked."""
        age = self.age_s()
        return "" if age is None else f"scheduler asked {age:.0f} s ago (at most every {self.every_s:g} s)"


def fresher(answer: Answer, metas: Iterable[RunMeta | None]) -> Mapping[str, JobInfo]:
    """``answer.jobs``, where a job recorded since the answer was asked (``asked_at``: this host's clock; the
    job's: its node's) that it started, or that it asked to be requeued, says so: a pending job that has
    started runs, a running one that asked for a requeue waits again. A recorded end needs no help: it
    outranks any word of the scheduler's."""
    jobs = dict(answer.jobs)
    for meta in metas:
        info = jobs.get(meta.job_id or "") if meta is not None else None
        if meta is None or info is None or info.from_accounting:
            continue
        if info.state == "PENDING" and meta.started_at is not None and meta.started_at > answer.asked_at:
            jobs[info.job_id] = replace(info, state="RUNNING", reason="")
        elif info.state == "RUNNING" and meta.requeued_at is not None and meta.requeued_at > answer.asked_at:
            jobs[info.job_id] = replace(info, state="REQUEUED")
    return jobs


def not_asked(answer: Answer | None, meta: RunMeta | None) -> str | None:
    """A reused answer's silence on a job it was not asked about (submitted since): not yet asked, not gone."""
    if answer is None or meta is None or meta.executor != "slurm" or not meta.job_id or meta.job_id in answer.asked:
        return None
    return f"job {meta.job_id} not asked about yet"
