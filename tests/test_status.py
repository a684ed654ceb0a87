"""State derivation from metadata + scheduler answers (a fake scheduler: this is our own logic)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import SWEEPS, cli, cli_status, state_of
from conftest import make_run as make_demo_run
from fake_scheduler import calls, down, say

from prove_jobs.cli import main
from prove_jobs.discover import discover_runs
from prove_jobs.identity import current_host
from prove_jobs.metadata import RunMeta, write_meta
from prove_jobs.runs import Run
from prove_jobs.scheduler import JobInfo
from prove_jobs.states import RunState, translate_slurm_state


def make_run(root: Path, model: str = "m") -> Run:
    run = Run(model=model, variant="V", method="baseline", dataset="cityscapes", data_root=root)
    run.run_dir.mkdir(parents=True)
    return run


def meta(**changes: object) -> RunMeta:
    base = RunMeta(model="m", variant="V", executor="local", host=current_host(), user="alice", job_id="1",
                   submitted_at=100.0, max_iters=40)
    return RunMeta(**{**base.to_json(), **changes})


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def train_log(run: Run, iteration: int = 5) -> Path:
    """One training start's scalars.json with one train record: the run has logged an iteration."""
    scalars = run.run_dir / "20260101_000000" / "vis_data" / "scalars.json"
    scalars.parent.mkdir(parents=True, exist_ok=True)
    record = {"lr": 0.01, "data_time": 0.2, "loss": 1.5, "time": 0.5, "iter": iteration, "memory": 812,
              "step": iteration}
    scalars.write_text(json.dumps(record) + "\n")
    return scalars


def status_of(run: Run) -> dict[str, Any]:
    """``prove-jobs status --json`` of one run of the demo sweep whose data root is ``run.data_root``: through
    the sweep, which lists a run whose folder is still empty (a run dir or ``--root`` shows nothing there)."""
    [row] = cli_status(SWEEPS / "demo.toml", "--data-root", str(run.data_root), *run.options.split())
    return row


def run_state(run: Run) -> RunState:
    return state_of(status_of(run))


def test_states_from_metadata_and_local_processes(tmp_path: Path) -> None:
    run = make_demo_run(tmp_path)
    mine = partial(meta, model=run.model, variant=run.variant)
    assert run_state(run) is RunState.NOT_SUBMITTED
    write_meta(run.run_dir, mine(pid=os.getpid()))
    assert run_state(run) is RunState.PENDING
    write_meta(run.run_dir, mine(pid=os.getpid(), started_at=101.0, attempts=1))
    assert run_state(run) is RunState.STARTING  # the job runs, its training has logged no iteration yet
    scalars = train_log(run)
    assert run_state(run) is RunState.RUNNING
    live = status_of(run)
    assert (live["sec_per_iter"], live["data_time"], live["loss"], live["lr"], live["memory_mb"]) == (
        0.5, 0.2, 1.5, 0.01, 812)
    assert live["log_path"] == str(scalars)
    write_meta(run.run_dir, mine(pid=dead_pid(), started_at=101.0))
    failed = status_of(run)
    assert state_of(failed) is RunState.FAILED
    assert any("gone without recording an end" in note for note in failed["notes"])
    holder = failed["lock_holder"]
    assert holder is not None and holder["stale"] is True and holder["user"] == "alice"
    write_meta(run.run_dir, mine(started_at=101.0, finished_at=200.0))
    done = status_of(run)
    assert state_of(done) is RunState.COMPLETED and done["elapsed_s"] == 99.0
    assert done["lock_holder"] is None
    write_meta(run.run_dir, mine(started_at=101.0, cancelled_at=150.0))
    assert run_state(run) is RunState.CANCELLED


def test_slurm_states_come_from_one_batched_query(tmp_path: Path, fake_cluster: Path) -> None:
    runs = [make_run(tmp_path, f"m{i}") for i in range(5)]
    say(fake_cluster, "7_0 PENDING", "7_1 RUNNING", "7_2 TIMEOUT", "7_3 GONE", "7_4 PENDING")
    for i, run in enumerate(runs):
        # 7_0 never started; 7_4 trained, was preempted and waits again, on its second restart
        write_meta(run.run_dir, meta(model=run.model, executor="slurm", job_id=f"7_{i}",
                                     started_at=None if i == 0 else 101.0, restarts=2 if i == 4 else 0,
                                     requeued_at=150.0 if i == 4 else None))
    train_log(runs[1])  # 7_1 has logged an iteration
    rows = cli_status(None, "--root", str(tmp_path))  # in path order: m0 to m4
    assert [row["run_dir"] for row in rows] == [str(run.run_dir) for run in runs]
    [squeue] = calls(fake_cluster, "squeue")
    assert "--jobs=7_0,7_1,7_2,7_3,7_4" in squeue
    # `status` also asks sacct, once for all jobs, what each was allocated (its GPU-hours: --duplicates, every
    # start); the states it asks sacct only for the job squeue no longer lists
    sacct = calls(fake_cluster, "sacct")
    [allocated] = [call for call in sacct if "--duplicates" in call]
    assert "--jobs=7_0,7_1,7_2,7_3,7_4" in allocated
    [asked] = [call for call in sacct if "--duplicates" not in call]
    assert "--jobs=7_3" in asked
    states = [state_of(row) for row in rows]
    assert states == [RunState.PENDING, RunState.RUNNING, RunState.TIMEOUT, RunState.FAILED, RunState.REQUEUED]
    assert rows[4]["restarts"] == 2 and rows[4]["state"] == "requeued"
    assert rows[1]["node"] == "gpu01"
    assert any("unknown to SLURM" in note for note in rows[3]["notes"])


def test_unreachable_scheduler_keeps_log_derived_view(tmp_path: Path, fake_cluster: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    write_meta(run.run_dir, meta(executor="slurm", job_id="9", started_at=101.0))
    train_log(run)
    down(fake_cluster)
    assert main(["status", str(run.run_dir), "--json"]) == 0
    said = capsys.readouterr()
    # the scheduler's silence is no run's note: a warning on stderr, the JSON on stdout staying one document
    warnings = [line.removeprefix("warning: ") for line in said.err.splitlines() if line.startswith("warning: ")]
    [note] = [warning for warning in warnings if warning.startswith("scheduler unreachable")]
    assert "Unable to contact slurm controller" in note
    [row] = json.loads(said.out)
    assert state_of(row) is RunState.RUNNING


def test_corrupt_metadata_is_a_note_not_a_crash(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run.run_dir / "prove_run.json").write_bytes(b"\x00\xffgarbage{")
    [status] = cli_status(run.run_dir)
    assert state_of(status) is RunState.NOT_SUBMITTED
    assert "corrupt run metadata" in status["notes"][-1]


@pytest.mark.parametrize(
    ("word", "state"),
    [("PENDING", RunState.PENDING), ("REQUEUED", RunState.PENDING), ("RUNNING", RunState.RUNNING),
     ("CANCELLED", RunState.CANCELLED), ("TIMEOUT", RunState.TIMEOUT), ("OUT_OF_MEMORY", RunState.FAILED),
     ("NODE_FAIL", RunState.FAILED), ("COMPLETED", None), ("WHATEVER", None)],
)
def test_slurm_words_translate_in_one_place(word: str, state: RunState | None) -> None:
    assert translate_slurm_state(word) is state


def test_discover_finds_hand_started_work_dirs(tmp_path: Path) -> None:
    ours = make_run(tmp_path, "ours")
    write_meta(ours.run_dir, meta(model="ours"))
    theirs = tmp_path / "V" / "baseline" / "cityscapes" / "theirs"
    (theirs / "20260203_101010").mkdir(parents=True)
    (tmp_path / "V" / "baseline" / "cityscapes" / "empty").mkdir()
    (tmp_path / ".prove-jobs" / "submitit" / "1" / "x").mkdir(parents=True)
    assert sorted(r.model for r in discover_runs(tmp_path)) == ["ours", "theirs"]


def test_a_lifecycle_is_one_reading_of_the_recorded_times() -> None:
    """Issue 24: the stage a submission is in, read from prove_run.json's timestamps in one place (an end outranks
    a start; a finish a cancel, a cancel a failure, a failure a release), the file's form unchanged."""
    from prove_jobs.metadata import Stage

    assert meta().lifecycle.stage is Stage.SUBMITTED and meta().lifecycle.at == 100.0 and meta().lifecycle.open
    assert meta(started_at=110.0).lifecycle.started
    ended = meta(started_at=110.0, failed_at=120.0, cancelled_at=130.0, cancelled_by="bob", released_at=140.0)
    assert (ended.lifecycle.stage, ended.lifecycle.at, ended.lifecycle.by) == (Stage.CANCELLED, 130.0, "bob")
    assert not ended.lifecycle.open and not ended.lifecycle.started
    assert meta(failed_at=120.0, released_at=140.0).lifecycle.stage is Stage.FAILED
    assert meta(released_at=140.0, released_by="bob").lifecycle.by == "bob"
    assert meta(finished_at=150.0, cancelled_at=130.0).lifecycle.stage is Stage.FINISHED
    assert "lifecycle" not in meta().to_json()  # derived, never written


def test_a_state_is_decided_from_the_evidence_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: ``decide`` reads no file, no clock and no process: what it needs is in the Evidence."""
    from prove_jobs.claims import LockHolder
    from prove_jobs.conflicts import Conflict
    from prove_jobs.evidence import Evidence
    from prove_jobs.listing import Listing
    from prove_jobs.logs import RunLog
    from prove_jobs.status import decide

    run = Run(model="m", variant="V", method="baseline", dataset="cityscapes", data_root=tmp_path)
    listing = Listing(run.run_dir)  # missing: every file may be there
    log = RunLog(last_iter=None, max_iters=None, curve=(), starts=0, first_time=None, last_time=None,
                 seconds_per_iter=None, warnings=())
    slurm = meta(executor="slurm", job_id="7", started_at=110.0, gpus=2)

    def touched(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"decide looked outside its evidence: {args}")

    for name in ("scandir", "open", "stat", "lstat", "kill"):
        monkeypatch.setattr(os, name, touched)
    base = Evidence(run=run, listing=listing, log=log, now=1_000.0, here="login", me="alice", meta=slurm)
    # trained in this submission, now pending again: requeued, with the reason SLURM gives
    pending = decide(Evidence(**{**base.__dict__, "job": JobInfo("7", "PENDING", reason="Priority"),
                                 "allocated": (3600.0, None)}))
    assert (pending.state, pending.pending_reason, pending.accounted_gpu_hours) == (RunState.REQUEUED, "Priority", 2.0)
    assert decide(base).state is RunState.FAILED  # unknown to SLURM, no end recorded
    assert decide(Evidence(**{**base.__dict__, "scheduler_note": "scheduler unreachable"})).state is RunState.STARTING
    holder = LockHolder(user="carol", host="h", executor="slurm", job_id="9", pid=None, since=None, sweep="s.toml")
    conflict = Conflict(holder, 50.0, "s.toml", queued_job_id="8", after_job_id="9")
    met = decide(Evidence(**{**base.__dict__, "meta": None, "conflict": conflict}))
    assert met.state is RunState.LOCK_CONFLICT and met.lock_holder == LockHolder(**{**holder.__dict__, "stale": True})
    assert met.notes == ("queued as slurm job 8: starts when carol's job 9 ends",)


@pytest.mark.parametrize("command", [["status", "--json"], ["report", "--format", "json"]])
def test_root_lists_each_run_dir_once(reference_root: Path, monkeypatch: pytest.MonkeyPatch,
                                      command: list[str]) -> None:
    """``--root`` discovery lists every run dir; the statuses read that listing rather than list it again (on NFS
    each listing is a round trip to the server)."""
    run_dirs = {str(meta.parent) for meta in reference_root.rglob("prove_run.json")}
    assert len(run_dirs) > 10
    listed: list[str | int] = []
    real = os.scandir

    def counting(path: Any = ".") -> Any:
        listed.append(path if isinstance(path, int) else os.fspath(path))  # an int: a folder's descriptor
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    cli(command[0], "--root", str(reference_root), *command[1:])
    again = sorted(d for d in run_dirs if listed.count(d) > 1)
    assert run_dirs <= set(listed)  # each was listed, by the discovery
    assert not again, f"{len(again)} run dirs listed more than once, e.g. {again[:2]}"
