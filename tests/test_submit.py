"""Submission through submitit's local executor: real processes training real mmseg models."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SWEEPS, Gate, checkpointed, demo_sweep_with, stall_templates

from prove_jobs.control import wait
from prove_jobs.errors import RunError
from prove_jobs.metadata import read_meta
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.states import RunState
from prove_jobs.status import collect_status
from prove_jobs.submit import submit


@pytest.fixture
def demo_sweep(weird_tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweep:
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(weird_tmp_path / "data" / "cityscapes")
    monkeypatch.setenv("DEMO_ROOT", str(weird_tmp_path))
    (weird_tmp_path / "runs").mkdir()
    return load_sweep(SWEEPS / "demo.toml")


def test_dry_run_writes_nothing_and_shows_the_array(demo_sweep: Sweep) -> None:
    runs = demo_sweep.runs()
    result = submit(demo_sweep, runs, executor="slurm", dry_run=True)
    submitted, skipped = result.submitted, result.skipped
    assert [s.run for s in submitted] == runs and skipped == []
    assert all(s.job_id is None for s in submitted)
    assert list((demo_sweep.data_root).iterdir()) == []
    [command] = result.scripts
    assert "--array=0-3" in command and "--time=30" in command and "--gres" not in command
    assert "--signal=USR2@90" in command and result.warnings == []


def test_a_time_limit_shorter_than_the_checkpoint_signal_is_a_warning(demo_sweep: Sweep) -> None:
    from dataclasses import replace

    short = replace(demo_sweep, resources=replace(demo_sweep.resources, timeout_min=3))
    result = submit(short, short.runs(["demo_fcn_r18_tiny"], ["DEMO_REF"]), executor="slurm", dry_run=True)
    [warning] = result.warnings
    assert warning.startswith("timeout_min = 3 (DEMO_REF/demo_fcn_r18_tiny)") and "at least 4 minutes" in warning
    fine = replace(demo_sweep, resources=replace(demo_sweep.resources, timeout_min=4))
    assert submit(fine, fine.runs(), executor="slurm", dry_run=True).warnings == []
    assert submit(short, short.runs(), executor="local", dry_run=True).warnings == []


needs_training = pytest.mark.skipif(
    importlib.util.find_spec("mmseg") is None, reason="the train extra (mmsegmentation) is not installed"
)


@pytest.fixture
def held_demo(weird_tmp_path: Path, templates_copy: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Sweep, Gate]:
    """The demo sweep whose trainings hold after iteration 10 (their first checkpoint) until the gate opens."""
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(weird_tmp_path / "data" / "cityscapes")
    monkeypatch.setenv("DEMO_ROOT", str(weird_tmp_path))
    (weird_tmp_path / "runs").mkdir()
    gate = stall_templates(templates_copy, 10, monkeypatch)
    return load_sweep(demo_sweep_with(weird_tmp_path, templates_copy)), gate


@pytest.mark.slow
@needs_training
def test_local_submit_trains_a_real_run_and_refuses_to_overwrite_it(held_demo: tuple[Sweep, Gate]) -> None:
    sweep, gate = held_demo
    run = sweep.runs(models=["demo_fcn_r18_tiny"], variants=["DEMO_BS4"])[0]
    submitted = submit(sweep, [run], executor="local").submitted
    job_id = submitted[0].job_id
    assert job_id is not None and job_id.isdigit()
    # submit returned while the training cannot have finished (it holds at iteration 10 until the gate opens)
    assert collect_status([run]).statuses[0].state in {RunState.PENDING, RunState.STARTING, RunState.RUNNING}
    _wait_for(lambda: gate.reached, "the training to reach iteration 10")
    assert read_meta(run.run_dir).finished_at is None  # type: ignore[union-attr]
    gate.open()

    metas = wait([run], poll_s=0.5, timeout_s=300)
    meta = metas[run]
    assert meta is not None and meta.finished_at is not None, meta
    assert meta.job_id == job_id and meta.executor == "local" and meta.attempts == 1
    assert meta.started_at is not None and meta.submitted_at is not None

    status = collect_status([run]).statuses[0]
    assert status.state is RunState.COMPLETED
    assert status.iter == 20 and status.max_iters == 20
    assert [p.iter for p in status.curve] == [10, 20]
    assert all(p.miou is not None and 0 < p.miou <= 100 for p in status.curve)

    logs_before = {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="already completed"):
        submit(sweep, [run], executor="local")
    assert {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()} == logs_before
    skipped = submit(sweep, [run], executor="local", skip_done=True).skipped
    assert [r for r, _ in skipped] == [run]


def _wait_for(condition: Callable[[], object], what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s  # a bound for a hung test, not a measure of speed
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.1)


@pytest.mark.slow
@needs_training
def test_killed_run_resumes_from_its_last_checkpoint(held_demo: tuple[Sweep, Gate]) -> None:
    sweep, gate = held_demo
    run = sweep.runs(models=["demo_fcn_r18_tiny"], variants=["DEMO_BS4"])[0]
    submit(sweep, [run], executor="local")
    _wait_for(lambda: gate.reached, "the training to hold after its first checkpoint")
    assert checkpointed(run.run_dir) == 10  # the pointer, written once iter_10.pth is whole
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.job_id is not None
    os.killpg(int(meta.job_id), signal.SIGKILL)
    wait([run], poll_s=0.2, timeout_s=60)
    killed = collect_status([run]).statuses[0]
    assert killed.state is RunState.FAILED
    assert killed.iter == 10
    assert [p.iter for p in killed.curve] == [10]  # held after iteration 10's checkpoint and validation

    gate.open()
    submit(sweep, [run], executor="local")
    final = wait([run], poll_s=0.5, timeout_s=300)[run]
    assert final is not None and final.finished_at is not None and final.attempts == 2
    status = collect_status([run]).statuses[0]
    assert status.state is RunState.COMPLETED and status.iter == 20
    assert [p.iter for p in status.curve] == [10, 20]
    # The second start resumed: its scalars begin after iteration 10, not at 1.
    starts = sorted(p for p in run.run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())
    assert len(starts) == 2
    second = [json.loads(line) for line in (starts[1] / "vis_data" / "scalars.json").read_text().splitlines()]
    assert min(r["step"] for r in second if "loss" in r) > 10


def test_the_private_submitit_api_we_patch_still_looks_as_we_expect() -> None:
    """executors.SubmititLocalPatch swaps submitit.local.local.subprocess while a job is submitted."""
    import inspect

    from prove_jobs.executors import SubmititLocalPatch

    local = SubmititLocalPatch.module()
    assert local.__name__ == SubmititLocalPatch.MODULE
    assert local.subprocess.Popen is not None and "_submit_command" in vars(local.LocalExecutor)
    assert "subprocess.Popen(" in inspect.getsource(local.start_controller)


def test_a_local_job_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    from prove_jobs.executors import DetachedLocalExecutor

    executor = DetachedLocalExecutor(folder=tmp_path / "%j")
    executor.update_parameters(timeout_min=2)
    job = executor.submit(os.getsid, 0)  # the task's own session
    assert job.result() == int(job.job_id) != os.getsid(0)  # the controller leads it: a Ctrl-C here spares it
