"""Against a real SLURM controller (tests/cluster/slurm-up.sh; `make slurm-up`): arrays, states, cancel,
preemption and requeue, failures, the controller going away.

Skipped, with the reason, where no controller answers (a laptop, a non-root CI).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REPO,
    SLURM_RESOURCES,
    Gate,
    checkpointed,
    cli,
    cli_states,
    cli_status,
    long_sweep,
    preempt,
    read_or_empty,
    scontrol_job,
    slurm_demo_sweep,
    stall_templates,
    wait_until,
)

from prove_jobs.cli import main
from prove_jobs.locks import training_lock_held
from prove_jobs.metadata import read_meta
from prove_jobs.runs import Run
from prove_jobs.scheduler import slurm_available
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.states import RunState

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)"),
]

RESOURCES = SLURM_RESOURCES


@pytest.fixture
def slurm_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweep:
    """The demo sweep on the test cluster; its trainings hold after iteration 10 while ``_gate(sweep)`` is closed."""
    sweep: Sweep = slurm_demo_sweep(tmp_path, monkeypatch)
    stall_templates(sweep.templates_dir, 10, monkeypatch).open()
    return load_sweep(sweep.path)


def _gate(sweep: Sweep) -> Gate:
    return Gate(sweep.templates_dir / "stall.gate")


def _row(sweep: Sweep, run: Run) -> dict[str, Any]:
    """`prove-jobs status SWEEP --model M --variant V --json`: the run's one row."""
    [row] = cli_status(sweep, *run.options.split())
    return row


def _state(sweep: Sweep, run: Run) -> RunState:
    [state] = cli_states(sweep, *run.options.split())
    return state


def test_one_array_walks_pending_running_completed(slurm_sweep: Sweep) -> None:
    runs = slurm_sweep.runs(variants=["DEMO_BS4"])
    cli("submit", slurm_sweep.path, "--variant", "DEMO_BS4", "--executor", "slurm")
    submitted = {row["run_dir"]: row["job_id"] for row in cli_status(slurm_sweep, "--variant", "DEMO_BS4")}
    ids = [submitted[str(run.run_dir)] for run in runs]  # each run's job, in the runs' order
    array = {job_id.split("_")[0] for job_id in ids if job_id}
    assert len(array) == 1 and sorted(ids) == [f"{next(iter(array))}_{i}" for i in range(len(runs))]

    job = scontrol_job(ids[0])
    assert job["Partition"] == "gpu" and job["TimeLimit"] == "00:10:00"
    assert "gres/gpu=1" in job.get("TRES", "") or "gpu:1" in job.get("TresPerNode", "")
    assert job["MinMemoryNode"] in ("2G", "2048M") and job["NumCPUs"] == "1"
    assert job["JobName"] == f"prove:{slurm_sweep.name}"

    seen: dict[str, set[str]] = {run.model: set() for run in runs}
    names: dict[str, set[str]] = {job_id: set() for job_id in ids if job_id}

    def all_done() -> bool:
        queue = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%j"], capture_output=True,
                               text=True, check=False).stdout
        for line in queue.splitlines():
            job_id, _, name = line.strip().partition("|")
            names.setdefault(job_id, set()).add(name)
        rows = cli_status(slurm_sweep, "--variant", "DEMO_BS4")
        for row in rows:
            seen[row["model"]].add(row["state"])
        return [row["state"] for row in rows] == ["completed"] * len(runs)

    wait_until("completion of the array", all_done, 300)
    for model, states in seen.items():
        assert "running" in states or "pending" in states, (model, states)
    for job_id, run in zip(ids, runs, strict=True):
        assert run.name in names[str(job_id)], names  # a running task is renamed after its run
    for row in cli_status(slurm_sweep, "--variant", "DEMO_BS4"):
        assert row["job_id"] in ids and row["iter"] == 20 and row["curve"] and row["curve"][-1][1]  # its mIoU
        meta = read_meta(Path(row["run_dir"]))
        assert meta is not None and meta.job_id == row["job_id"] and meta.host


def test_cancel_through_scancel_releases_the_run(slurm_sweep: Sweep) -> None:
    _gate(slurm_sweep).close()  # held after iteration 10: live when it is cancelled
    run = slurm_sweep.runs(["demo_fcn_r18_tiny"], ["DEMO_REF"])[0]
    cli("submit", slurm_sweep.path, *run.options.split(), "--executor", "slurm")
    wait_until("training", lambda: _gate(slurm_sweep).reached)
    row = _row(slurm_sweep, run)
    assert row["state"] == "running" and row["scheduler_state"] == "RUNNING" and row["node"]
    cli("cancel", slurm_sweep.path, *run.options.split())
    wait_until("the end of the training", lambda: not training_lock_held(run.run_dir), 60)
    row = _row(slurm_sweep, run)
    assert row["state"] == "cancelled" and row["lock_holder"] is None
    # a new submit may take the run over, and resumes it
    _gate(slurm_sweep).open()
    cli("submit", slurm_sweep.path, *run.options.split(), "--executor", "slurm")


def test_unreachable_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    pidfile = Path(os.environ.get("SLURM_STATE_DIR", "/var/lib/prove-jobs-slurm")) / "run" / "slurmctld.pid"
    if not pidfile.exists() or os.geteuid() != 0:
        pytest.skip("the controller was not started by tests/cluster/slurm-up.sh as root: not stopping it")
    monkeypatch.chdir(tmp_path)
    sweep = long_sweep(tmp_path, max_requeues=2, monkeypatch=monkeypatch)
    [run] = sweep.runs(["demo_fcn_r18_tiny"])
    cli("submit", sweep.path, *run.options.split(), "--executor", "slurm")
    wait_until("training to hold at iteration 20", lambda: _gate(sweep).reached)  # live while the controller is away
    subprocess.run(["kill", pidfile.read_text().strip()], check=True)
    try:
        wait_until("the controller to go", lambda: not slurm_available(), 30)
        capsys.readouterr()
        # main, not cli(): the scheduler's note is on status's stderr (its stdout stays one JSON document)
        assert main(["status", str(sweep.path), *run.options.split(), "--json"]) == 0
        out = capsys.readouterr()
        assert "scheduler unreachable" in out.err, out.err
        # from the metadata and the logs
        [row] = json.loads(out.out)
        assert row["state"] == "running"
        assert row["iter"] == 20
        code = main(["submit", str(sweep.path), "--model", "demo_segformer_tiny", "--executor", "slurm"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "sinfo" in err, err
        never = sweep.runs(["demo_segformer_tiny"])[0]
        assert not (never.run_dir / "prove_run.json").exists()  # no claim left behind
        assert read_meta(run.run_dir) is not None  # still whole
    finally:
        subprocess.run(["bash", str(REPO / "tests" / "cluster" / "slurm-up.sh")], check=True)
        _gate(sweep).open()
    wait_until("completion after the restart", lambda: _state(sweep, run) is RunState.COMPLETED, 240)


def test_preempted_job_checkpoints_requeues_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = long_sweep(tmp_path, max_requeues=2, monkeypatch=monkeypatch)
    [run] = sweep.runs(["demo_fcn_r18_tiny"])
    cli("submit", sweep.path, *run.options.split(), "--executor", "slurm")
    job_id = _row(sweep, run)["job_id"]  # the job submit queued
    wait_until("the training to hold after its first checkpoint", lambda: _gate(sweep).reached, 240)
    assert checkpointed(run.run_dir) == 20  # preempted mid-run, whatever the machine's speed
    preempt()

    seen: list[RunState] = []

    def reached(state: RunState) -> bool:
        now = _state(sweep, run)
        if not seen or seen[-1] is not now:
            seen.append(now)
        return now is state

    wait_until("the requeue", lambda: reached(RunState.REQUEUED), 240)
    _gate(sweep).open()  # the resumed start would hold again at iteration 20
    wait_until("completion after the preemption", lambda: reached(RunState.COMPLETED), 300)
    assert RunState.REQUEUED in seen, seen  # stopped, queued again, then running again
    assert seen[seen.index(RunState.REQUEUED):].count(RunState.RUNNING) >= 1, seen
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.restarts == 1 and meta.attempts == 2 and meta.job_id == job_id
    assert meta.requeued_at is None
    # submitit's handler, not only SLURM's own requeue: our checkpoint() ran on USR2.
    stderr = (run.run_dir / "prove" / "job.err").read_text()
    assert "Caught signal SIGUSR2" in stderr and "requeued, it resumes from iter_" in stderr
    # The curve goes on from the checkpoint: every validation once, none missing.
    row = _row(sweep, run)
    assert [it for it, _, _ in row["curve"]] == [20, 40, 60, 80, 100, 120]
    assert row["restarts"] == 1 and row["iter"] == 120
    starts = sorted(p for p in run.run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())
    second = [json.loads(line) for line in (starts[-1] / "vis_data" / "scalars.json").read_text().splitlines()]
    assert min(r["step"] for r in second if "loss" in r) > 20  # resumed, not restarted


def test_requeues_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = long_sweep(tmp_path, max_requeues=0, monkeypatch=monkeypatch)
    [run] = sweep.runs(["demo_fcn_r18_tiny"])
    cli("submit", sweep.path, *run.options.split(), "--executor", "slurm")
    wait_until("the training to hold after its first checkpoint", lambda: _gate(sweep).reached, 240)
    preempt()
    wait_until("the job to give up", lambda: _state(sweep, run) is RunState.FAILED, 240)
    wait_until("the training lock to be free", lambda: not training_lock_held(run.run_dir), 60)
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.error and "max_requeues" in meta.error, meta
    # `status RUN` says why, with the end of the job's stderr
    assert main(["status", str(run.run_dir)]) == 0
    out = capsys.readouterr()
    assert "max_requeues" in out.out + out.err


def test_failed_job_shows_its_stderr_and_resubmit_failed_resumes(
        slurm_sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    sweep_file = str(slurm_sweep.path)
    run = slurm_sweep.runs(["demo_fcn_r18_tiny"], ["DEMO_BS4"])[0]
    data = slurm_sweep.path.parent / "data" / "cityscapes" / "leftImg8bit" / "train"
    moved = data.with_name("train-moved")
    data.rename(moved)  # the training images vanish: the training raises when it builds its dataset
    cli("submit", sweep_file, *run.options.split(), "--executor", "slurm")
    wait_until("the failure", lambda: _state(slurm_sweep, run) is RunState.FAILED, 240)
    job_err = run.run_dir / "prove" / "job.err"
    wait_until("the job's end in its stderr", lambda: "srun: error" in read_or_empty(job_err), 60)
    capsys.readouterr()
    assert main(["status", str(run.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Failed" in out and "error: " in out and "cityscapes" in out
    tail = out[out.index("last "):]
    assert "job.err" in tail.splitlines()[0] and "srun: error" in tail  # the job's own last words

    moved.rename(data)  # the cause is fixed
    assert main(["resubmit", sweep_file, "--failed", "--executor", "slurm"]) == 0
    assert f"resubmitted {run.name} as slurm job" in capsys.readouterr().err
    wait_until("completion", lambda: _state(slurm_sweep, run) is RunState.COMPLETED, 240)
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.attempts == 2 and meta.error is None
    assert main(["resubmit", sweep_file, "--failed"]) == 0
    assert "no failed runs to resubmit" in capsys.readouterr().err



def _accounting_on() -> bool:
    done = subprocess.run(["sacct", "--noheader", "-j", "1"], capture_output=True, text=True, check=False)
    return done.returncode == 0


def _forgotten_by_squeue(job_id: str) -> bool:
    done = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={job_id}"], capture_output=True,
                          text=True, check=False)
    return done.returncode != 0 or not done.stdout.strip()


def test_a_job_cancelled_behind_our_back_with_and_without_accounting(slurm_sweep: Sweep) -> None:
    """`scancel` by hand: nothing is recorded by the payload (SIGKILL after KillWait), so the state
    comes from squeue while it remembers the job, then from sacct, or, with accounting off, from
    the metadata alone: an open claim whose job SLURM no longer knows is a failure, never 'running'."""
    [run] = slurm_sweep.runs(["demo_segformer_tiny"], ["DEMO_REF"])
    _gate(slurm_sweep).close()  # held after iteration 10: live when it is cancelled
    cli("submit", slurm_sweep.path, *run.options.split(), "--executor", "slurm")
    job_id = str(_row(slurm_sweep, run)["job_id"])
    wait_until("training", lambda: _gate(slurm_sweep).reached)
    subprocess.run(["scancel", job_id], check=True)
    wait_until("the cancel to show", lambda: _state(slurm_sweep, run) is RunState.CANCELLED, 60)
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.cancelled_at is None  # squeue said so, not our records
    wait_until("squeue to forget the job (MinJobAge)", lambda: _forgotten_by_squeue(job_id), 240)
    row = _row(slurm_sweep, run)
    if _accounting_on():
        assert row["state"] == "cancelled" and row["scheduler_state"] == "CANCELLED"
    else:
        assert row["state"] == "failed"
        assert any("unknown to SLURM" in note for note in row["notes"]), row["notes"]
    assert row["lock_holder"] is not None and row["lock_holder"]["stale"]  # free for the next submit


def test_a_pending_job_shows_squeues_reason(slurm_sweep: Sweep) -> None:
    """squeue says why a job waits (Priority, Resources, Dependency, a hold): status shows it."""
    text = slurm_sweep.path.read_text().replace("[resources]", '[resources]\nextra_sbatch = ["--hold"]')
    slurm_sweep.path.write_text(text)
    args = [str(slurm_sweep.path), "--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    cli("submit", *args, "--executor", "slurm")
    try:
        def held() -> dict[str, Any] | None:
            [row] = cli_status(*args)
            return row if row["pending_reason"] == "JobHeldUser" else None

        row = wait_until("squeue's reason JobHeldUser", held, 60)
        assert row["state"] == "pending" and row["scheduler_state"] == "PENDING"
        assert "Pending (JobHeldUser)" in cli("status", *args)
    finally:
        cli("cancel", *args)
