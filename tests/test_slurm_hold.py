"""Issue 23 on the real SLURM test cluster, through the CLI: a sweep with a broken template is held after its first
two runs fail alike, `status` says so in one line, and after the fix `prove-jobs release` gets every run trained;
`submit --smoke` tests each combination before anything is queued.

Each test prints its timeline (seconds from the submit), recorded in docs/cluster.md ("Holds").
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import SLURM_RESOURCES, cli, cli_states, cli_status, slurm_demo_sweep, wait_until

from prove_jobs.cli import main
from prove_jobs.metadata import read_meta
from prove_jobs.scheduler import slurm_available
from prove_jobs.states import RunState

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)"),
]

# every run's dataset gets a keyword CityscapesDataset does not take: each training fails as it builds its loader
BREAK = "\ntrain_dataloader['dataset']['no_such_key'] = 1\n"


def _squeue(array: str) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T|%r", f"--jobs={array}"],
                         capture_output=True, text=True, check=False).stdout
    return {job: (state, reason) for job, state, reason in (line.strip().split("|") for line in out.splitlines())}


def test_a_broken_template_holds_the_rest_then_release_after_the_fix_completes_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = slurm_demo_sweep(tmp_path, monkeypatch, SLURM_RESOURCES + "max_running = 1\n")  # --array=0-3%1
    template = sweep.templates_dir / "run_config.py.tmpl"
    good = template.read_text()
    template.write_text(good + BREAK)
    runs = sweep.runs()
    assert len(runs) == 4
    t0 = time.monotonic()
    cli("submit", sweep.path, "--executor", "slurm")
    ids = [read_meta(run.run_dir).job_id for run in runs]  # type: ignore[union-attr]
    array = str(ids[0]).split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(4)]

    first = wait_until("the first failure", lambda: RunState.FAILED in cli_states(sweep) and time.monotonic(),
                       240) - t0
    queue = wait_until("the hold", lambda: (q := _squeue(array)) and all(
        reason == "JobHeldUser" for job, (state, reason) in q.items() if state == "PENDING") and q, 240)
    held_at = time.monotonic() - t0
    rows = {row["run_dir"]: row for row in cli_status(sweep)}
    assert [rows[str(r.run_dir)]["state"] for r in runs[:2]] == ["failed", "failed"]
    assert sorted(job for job, (state, _) in queue.items() if state == "PENDING") == [f"{array}_2", f"{array}_3"]
    for run in runs[:2]:
        assert "no_such_key" in (read_meta(run.run_dir).error or "")  # type: ignore[union-attr]

    # status: one line, with the error and the command that releases them
    assert main(["status", str(sweep.path)]) == 0
    out = capsys.readouterr()
    [line] = [line for line in out.err.splitlines() if "⏸" in line]
    assert f"2 queued tasks of job {array} held" in line and "no_such_key" in line, line
    assert f"prove-jobs release {sweep.path}" in out.err.replace("\n", " ")
    assert "Pending (JobHeldUser)" in out.out
    assert sorted(r["state"] for r in cli_status(sweep)) == ["failed", "failed", "pending", "pending"]

    time.sleep(5)  # held: nothing starts meanwhile
    assert {job: state for job, (state, _) in _squeue(array).items() if job.endswith(("_2", "_3"))} == {
        f"{array}_2": "PENDING", f"{array}_3": "PENDING"}

    template.write_text(good)  # the fix
    fixed_at = time.monotonic() - t0
    assert main(["release", str(sweep.path)]) == 0
    err = capsys.readouterr().err
    released_at = time.monotonic() - t0
    assert err.count("config changed since it was queued") == 2, err
    assert err.count("as slurm job") == 4, err  # the 2 held (rendered anew) and the 2 that failed, one new array

    def all_completed() -> bool:
        return cli_states(sweep) == [RunState.COMPLETED] * len(runs)

    wait_until("every run to complete", all_completed, 480)
    done_at = time.monotonic() - t0
    for run in runs:
        meta = read_meta(run.run_dir)
        assert meta is not None and meta.error is None and meta.job_id and not meta.job_id.startswith(f"{array}_")
    assert main(["release", str(sweep.path)]) == 0
    assert "nothing to release" in capsys.readouterr().err
    print(f"\ntimeline (s from submit): first failure {first:.0f}, held {held_at:.0f}, fixed {fixed_at:.0f}, "
          f"released {released_at:.0f}, all 4 completed {done_at:.0f}")


def test_a_fix_outside_the_templates_releases_the_held_tasks_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The dataset's training images were not there (each run fails as it lists them); once they are back nothing
    rendered changed: `release` releases the held tasks in place (`scontrol release`) and submits again the two
    that failed."""
    sweep = slurm_demo_sweep(tmp_path, monkeypatch, SLURM_RESOURCES + "max_running = 1\n")
    data = tmp_path / "data" / "cityscapes" / "leftImg8bit" / "train"
    moved = data.with_name("train-moved")
    data.rename(moved)
    runs = sweep.runs()
    cli("submit", sweep.path, "--executor", "slurm")
    array = str(read_meta(runs[0].run_dir).job_id).split("_")[0]  # type: ignore[union-attr]
    wait_until("the hold", lambda: [r for s, r in _squeue(array).values() if s == "PENDING"] == ["JobHeldUser"] * 2,
               240)
    moved.rename(data)  # the fix
    capsys.readouterr()
    assert main(["release", str(sweep.path)]) == 0
    err = capsys.readouterr().err
    assert err.count("its config is unchanged") == 2 and err.count("as slurm job") == 2, err
    wait_until("every run to complete", lambda: cli_states(sweep) == [RunState.COMPLETED] * len(runs), 480)
    jobs = [str(read_meta(run.run_dir).job_id) for run in runs]  # type: ignore[union-attr]
    assert jobs[2:] == [f"{array}_2", f"{array}_3"] and not any(j.startswith(f"{array}_") for j in jobs[:2])


def test_smoke_on_slurm_tests_each_combination_then_submits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = slurm_demo_sweep(tmp_path, monkeypatch, SLURM_RESOURCES)
    broken = sweep.templates_dir / "models" / "demo_fcn_r18_tiny.py"
    good = broken.read_text()
    broken.write_text(good + "\nmodel['decode_head']['no_such_key'] = 1\n")
    args = ["submit", str(sweep.path), "--variant", "DEMO_BS4", "--executor", "slurm", "--smoke", "2",
            "--smoke-partition", "gpu"]  # not urgent: it preempts
    t0 = time.monotonic()
    assert main(args) == 1
    failed_in = time.monotonic() - t0
    err = capsys.readouterr().err
    assert "smoke test failed: DEMO_BS4/demo_fcn_r18_tiny: TypeError" in err and "no_such_key" in err, err
    assert "smoke test passed: DEMO_BS4/demo_segformer_tiny" in err and "nothing of the sweep submitted" in err
    assert not list((tmp_path / "runs").rglob("prove_run.json"))

    broken.write_text(good)
    t0 = time.monotonic()
    assert main(args) == 0
    passed_in = time.monotonic() - t0
    err = capsys.readouterr().err
    assert err.count("smoke test passed") == 2 and err.count("submitted DEMO_BS4/") == 2, err
    runs = sweep.runs(variants=["DEMO_BS4"])
    wait_until("completion", lambda: cli_states(sweep, "--variant", "DEMO_BS4") == [RunState.COMPLETED] * len(runs),
               300)
    for run in runs:
        meta = read_meta(run.run_dir)
        assert meta is not None and meta.attempts == 1  # the smoke was no start of the run
    print(f"\nsmoke on SLURM: failed after {failed_in:.0f} s, passed and submitted after {passed_in:.0f} s")
