"""A start that ended without a word: no end, no failure, no requeue recorded, and yet the job starts again.

What SLURM does when a node dies (its slurmd silent for ``SlurmdTimeout``): it marks the node DOWN and
requeues the batch job, which starts again elsewhere and resumes from the last checkpoint. The start
that was lost could record nothing; the next one says what happened, with the node's state as SLURM
gives it, so that ``status`` can show why the run restarted.
"""

from __future__ import annotations

import time

from prove_jobs.errors import SchedulerUnavailable
from prove_jobs.metadata import RunMeta, Stage
from prove_jobs.scheduler import JobInfo, call
from prove_jobs.states import RunState


def lost_start(meta: RunMeta, restarts: int) -> str | None:
    """Why the previous start of this submission ended, when it never said: ``None`` if it did (or there was none)."""
    if restarts < 1 or meta.started_at is None or meta.requeued_at is not None:
        return None
    if meta.lifecycle.stage in (Stage.FINISHED, Stage.CANCELLED, Stage.FAILED):
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.started_at))
    where = meta.nodes or meta.host or "its node"
    return (f"restarted by SLURM: the start of {when} on {where} ended without a word"
            f"{_node_state(meta.nodes or meta.host)}")


def _node_state(nodes: str) -> str:
    """``; SLURM says node mn1 is DOWN* (Not responding)``: what SLURM says of the lost start's node(s) now; ""
    when it cannot tell."""
    if not nodes:
        return ""
    try:
        out = call(["scontrol", "show", "node", nodes, "--oneliner"], timeout_s=10)
    except SchedulerUnavailable:
        return ""
    said = []
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split(" ") if "=" in item)
        state, reason = fields.get("State", ""), line.partition(" Reason=")[2].split(" [")[0].strip()
        if "DOWN" in state or "FAIL" in state or "DRAIN" in state or reason:
            said.append(f"{fields.get('NodeName', '?')} is {state}" + (f" ({reason})" if reason else ""))
    return f"; SLURM says node {', '.join(said)}" if said else "; its node is up again (killed, or rebooted)"


def scheduler_notes(state: RunState, meta: RunMeta, info: JobInfo) -> list[str]:
    """What SLURM did that the job could not record: requeued it after its start ended without a word (a node
    failure), or ended it (NODE_FAIL, OUT_OF_MEMORY)."""
    where = meta.nodes or meta.host or "its node"
    if state is RunState.REQUEUED and meta.requeued_at is None:
        return [f"its start on {where} ended without a word and SLURM queued it again (a node failure?)"]
    if state is RunState.FAILED and info.state != "FAILED":
        return [f"SLURM ended job {meta.job_id} with {info.state} on {info.node or where}"]
    return []
