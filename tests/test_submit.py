"""Submission through submitit's local executor: real processes training real mmseg models."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import SWEEPS, checkpointed

from prove_jobs.errors import RunError
from prove_jobs.runs import read_meta
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.status import RunState, collect_status
from prove_jobs.submit import describe_command, submit, wait


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
    command = describe_command("slurm", demo_sweep, submitted[0].resources, runs)
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


@pytest.mark.slow
@needs_training
def test_local_submit_trains_a_real_run_and_refuses_to_overwrite_it(demo_sweep: Sweep) -> None:
    run = demo_sweep.runs(models=["demo_fcn_r18_tiny"], variants=["DEMO_BS4"])[0]
    started = time.monotonic()
    submitted = submit(demo_sweep, [run], executor="local").submitted
    returned_after = time.monotonic() - started
    job_id = submitted[0].job_id
    assert job_id is not None and job_id.isdigit()
    # submit returns once queued: the run is not finished yet.
    assert collect_status([run]).statuses[0].state in {RunState.PENDING, RunState.RUNNING}

    metas = wait([run], poll_s=0.5, timeout_s=300)
    meta = metas[run]
    assert meta is not None and meta.finished_at is not None, meta
    assert meta.job_id == job_id and meta.executor == "local" and meta.attempts == 1
    assert meta.started_at is not None and meta.submitted_at is not None
    assert meta.finished_at - meta.started_at > returned_after

    status = collect_status([run]).statuses[0]
    assert status.state is RunState.COMPLETED
    assert status.iter == 20 and status.max_iters == 20
    assert [p.iter for p in status.curve] == [10, 20]
    assert all(p.miou is not None and 0 < p.miou <= 100 for p in status.curve)

    logs_before = {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="already completed"):
        submit(demo_sweep, [run], executor="local")
    assert {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()} == logs_before
    skipped = submit(demo_sweep, [run], executor="local", skip_done=True).skipped
    assert [r for r, _ in skipped] == [run]


@pytest.mark.slow
@needs_training
def test_killed_run_resumes_from_its_last_checkpoint(demo_sweep: Sweep) -> None:
    run = demo_sweep.runs(models=["demo_fcn_r18_tiny"], variants=["DEMO_REF"])[0]
    submit(demo_sweep, [run], executor="local")
    deadline = time.monotonic() + 240
    while checkpointed(run.run_dir) < 20:  # the pointer, written once iter_20.pth is whole
        assert time.monotonic() < deadline, "no checkpoint at iteration 20"
        time.sleep(0.2)
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.job_id is not None
    os.killpg(int(meta.job_id), signal.SIGKILL)
    wait([run], poll_s=0.2, timeout_s=30)
    killed = collect_status([run]).statuses[0]
    assert killed.state is RunState.FAILED
    assert killed.iter is not None and 20 <= killed.iter < 40
    # The kill may land between the checkpoint and the validation at 20 (both run after iteration 20).
    before = [p.iter for p in killed.curve]
    assert before in ([], [20])

    submit(demo_sweep, [run], executor="local")
    final = wait([run], poll_s=0.5, timeout_s=300)[run]
    assert final is not None and final.finished_at is not None and final.attempts == 2
    status = collect_status([run]).statuses[0]
    assert status.state is RunState.COMPLETED and status.iter == 40
    assert [p.iter for p in status.curve] == [*before, 40]
    # The second start resumed: its scalars begin after iteration 20, not at 1.
    starts = sorted(p for p in run.run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())
    assert len(starts) == 2
    second = [json.loads(line) for line in (starts[1] / "vis_data" / "scalars.json").read_text().splitlines()]
    assert min(r["step"] for r in second if "loss" in r) > 20
