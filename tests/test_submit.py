"""Submission through submitit's local executor: real processes training real mmseg models."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    SWEEPS,
    Gate,
    checkpointed,
    cli,
    cli_states,
    cli_status,
    demo_sweep_with,
    said,
    stall_templates,
)

from prove_jobs.metadata import read_meta
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.states import RunState


def scripts(out: str) -> list[str]:
    """The job scripts a dry run printed on stdout, each from its ``#!`` line."""
    return [part for part in re.split(r"^(?=#!)", out, flags=re.MULTILINE) if part.strip()]


@pytest.fixture
def demo_sweep(weird_tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweep:
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(weird_tmp_path / "data" / "cityscapes")
    monkeypatch.setenv("DEMO_ROOT", str(weird_tmp_path))
    (weird_tmp_path / "runs").mkdir()
    return load_sweep(SWEEPS / "demo.toml")


def test_dry_run_writes_nothing_and_shows_the_array(demo_sweep: Sweep) -> None:
    runs = demo_sweep.runs()
    dry = said("submit", demo_sweep.path, "--executor", "slurm", "--dry-run")
    assert dry.code == 0, dry.err
    # "would submit <variant>/<model> -> <run dir> (config <hash>)": each run, in the sweep's order
    assert [line.rsplit(" (config ", 1)[0] for line in dry.lines("would submit ")] == [
        f"{run.name} -> {run.run_dir}" for run in runs]
    assert dry.lines("skipped ") == []
    assert list((demo_sweep.data_root).iterdir()) == []
    assert dry.lines("submitted ") == []  # no job: no job id said, none recorded
    assert all(row["job_id"] is None for row in cli_status(demo_sweep))
    [command] = scripts(dry.out)
    assert "--array=0-3" in command and "--time=30" in command and "--gres" not in command
    assert "--signal=USR2@90" in command and dry.lines("warning: ") == []


def with_time_limit(sweep: Sweep, minutes: int) -> Path:
    """The sweep's file with ``timeout_min = minutes``, written beside its data root."""
    text = sweep.path.read_text()
    assert "timeout_min = 30\n" in text
    path = sweep.data_root.parent / f"demo-{minutes}min.toml"
    path.write_text(text.replace("timeout_min = 30\n", f"timeout_min = {minutes}\n"))
    return path


def test_a_time_limit_shorter_than_the_checkpoint_signal_is_a_warning(demo_sweep: Sweep) -> None:
    short = with_time_limit(demo_sweep, 3)
    dry = said("submit", short, "--model", "demo_fcn_r18_tiny", "--variant", "DEMO_REF", "--executor", "slurm",
               "--dry-run")
    assert dry.code == 0, dry.err
    [warning] = dry.lines("warning: ")
    assert warning.startswith("timeout_min = 3 (DEMO_REF/demo_fcn_r18_tiny)") and "at least 4 minutes" in warning
    fine = said("submit", with_time_limit(demo_sweep, 4), "--executor", "slurm", "--dry-run")
    assert fine.code == 0 and fine.lines("warning: ") == [], fine.err
    local = said("submit", short, "--executor", "local", "--dry-run")
    assert local.code == 0 and local.lines("warning: ") == [], local.err


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
    submitted = said("submit", sweep.path, *run.options.split(), "--executor", "local")
    assert submitted.code == 0, submitted.err
    [job_id] = submitted.lines(f"submitted {run.name} as local job ")
    assert job_id.isdigit()
    # submit returned while the training cannot have finished (it holds at iteration 10 until the gate opens)
    [state] = cli_states(sweep, *run.options.split())
    assert state in {RunState.PENDING, RunState.STARTING, RunState.RUNNING}
    _wait_for(lambda: gate.reached, "the training to reach iteration 10")
    assert read_meta(run.run_dir).finished_at is None  # type: ignore[union-attr]
    gate.open()

    waited = said("wait", sweep.path, *run.options.split(), "--poll", "0.5", "--timeout", "300")
    assert waited.code == 0 and waited.lines("1 run(s) ended: ") == ["1 completed"], waited.err
    meta = read_meta(run.run_dir)  # as the ended job left it: nothing writes it once wait has returned
    assert meta is not None and meta.finished_at is not None, meta
    assert meta.job_id == job_id and meta.executor == "local" and meta.attempts == 1
    assert meta.started_at is not None and meta.submitted_at is not None

    [status] = cli_status(sweep, *run.options.split())
    assert status["state"] == RunState.COMPLETED.key
    assert status["iter"] == 20 and status["max_iters"] == 20
    assert [it for it, _, _ in status["curve"]] == [10, 20]
    assert all(miou is not None and 0 < miou <= 100 for _, miou, _ in status["curve"])

    logs_before = {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}
    again = said("submit", sweep.path, *run.options.split(), "--executor", "local")
    assert again.code == 2 and re.search("already completed", again.err), again.err  # a RunError: exit 2
    assert {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()} == logs_before
    skipped = said("submit", sweep.path, *run.options.split(), "--executor", "local", "--skip-done")
    assert skipped.code == 0, skipped.err
    assert [line.split(": ", 1)[0] for line in skipped.lines("skipped ")] == [run.name]


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
    cli("submit", sweep.path, *run.options.split(), "--executor", "local")
    _wait_for(lambda: gate.reached, "the training to hold after its first checkpoint")
    assert checkpointed(run.run_dir) == 10  # the pointer, written once iter_10.pth is whole
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.job_id is not None
    os.killpg(int(meta.job_id), signal.SIGKILL)
    # exit 1: the run ended without completing (a timeout would be exit 2, an error)
    waited = said("wait", sweep.path, *run.options.split(), "--poll", "0.2", "--timeout", "60")
    assert waited.code == 1 and waited.lines("warning: 1 run(s) ended: ") == ["1 failed"], waited.err
    [killed] = cli_status(sweep, *run.options.split())
    assert killed["state"] == RunState.FAILED.key
    assert killed["iter"] == 10
    assert [it for it, _, _ in killed["curve"]] == [10]  # held after iteration 10's checkpoint and validation

    gate.open()
    cli("submit", sweep.path, *run.options.split(), "--executor", "local")
    waited = said("wait", sweep.path, *run.options.split(), "--poll", "0.5", "--timeout", "300")
    assert waited.code == 0 and waited.lines("1 run(s) ended: ") == ["1 completed"], waited.err
    final = read_meta(run.run_dir)
    assert final is not None and final.finished_at is not None and final.attempts == 2
    [status] = cli_status(sweep, *run.options.split())
    assert status["state"] == RunState.COMPLETED.key and status["iter"] == 20
    assert [it for it, _, _ in status["curve"]] == [10, 20]
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
