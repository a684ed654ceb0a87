"""The first hour of a new user (issue 9): every command does what it says, and says what it does.

Each test drives the real command (``prove_jobs.cli.main``, or the console script in a subprocess
where the environment or PATH is what is being tried), as a user types it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    BS16,
    REPO,
    SWEEPS,
    TEMPLATES,
    bench_module,
    demo_sweep_with,
    stall_templates,
    write_sweep,
)

from prove_jobs.cli import COMMANDS, build_parser, main
from prove_jobs.identity import current_host, current_user
from prove_jobs.metadata import RunMeta, read_meta, write_meta
from prove_jobs.runs import META_FILE

CLI = [sys.executable, "-m", "prove_jobs.cli"]
needs_training = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mmseg") is None, reason="the train extra (mmsegmentation) is not installed"
)


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          check=False)


def one_line_error(done: subprocess.CompletedProcess[str] | tuple[int, str], *needles: str) -> None:
    code, err = (done.returncode, done.stderr) if isinstance(done, subprocess.CompletedProcess) else done
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def json_out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def runs_in(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.rglob(META_FILE))


# --- 1. render -----------------------------------------------------------------------------------------


def test_render_writes_the_flat_config_of_every_shipped_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmengine", reason="render needs the train extra (mmengine)")
    from mmengine.config import Config

    monkeypatch.delenv("AWARE_DATA_ROOT", raising=False)  # a preview: the README's first lines work without it
    out = tmp_path / "rendered"
    assert main(["render", str(SWEEPS / "cityscapes.toml"), "--variant", "WEIGHTS_CITYSCAPES", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "AWARE_DATA_ROOT" in err
    written = sorted(p.name for p in out.iterdir())
    models = ["deeplabv3plus_r50", "hrnet_hr48", "mask2former_swin-b", "pspnet_r50", "segformer_mit-b3",
              "segnext_mscan-b"]
    assert written == [f"WEIGHTS_CITYSCAPES__{m}.py" for m in models]
    for name in written:  # each is a whole config: no _base_ left, the variant's numbers in it
        cfg = Config.fromfile(str(out / name), import_custom_modules=False)
        assert "_base_ =" not in (out / name).read_text()  # (a URL may hold "swin_base_patch4")
        assert cfg.train_dataloader.batch_size == 16 and cfg.optim_wrapper.optimizer.lr == 0.08
        assert cfg.train_cfg.max_iters == 20000


def test_render_that_fails_names_the_model_and_writes_nothing(tmp_path: Path, templates_copy: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmengine", reason="render needs the train extra (mmengine)")
    broken = templates_copy / "models" / "demo_fcn_r18_tiny.py"
    broken.write_text(broken.read_text() + "\nmodel = dict(backbone=undefined_name)\n")
    sweep = demo_sweep_with(tmp_path, templates_copy)
    out = tmp_path / "rendered"
    code = main(["render", str(sweep), "--out", str(out)])
    one_line_error((code, capsys.readouterr().err), str(broken), "DEMO_REF/demo_fcn_r18_tiny", "does not load")
    assert not out.exists()


# --- 2, 3. my own live run, a cancelled run ---------------------------------------------------------------


@pytest.mark.slow
@needs_training
def test_my_own_live_run_is_no_conflict_and_a_cancelled_run_stays_cancelled(
        demo: Path, templates_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    gate = stall_templates(templates_copy, 10, monkeypatch)  # the training holds after iteration 10
    sweep = str(demo_sweep_with(demo, templates_copy))
    one = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    assert main(["submit", sweep, *one, "--executor", "local"]) == 0
    run_dir = demo / "runs" / "DEMO_BS4" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    job = read_meta(run_dir).job_id  # type: ignore[union-attr]
    capsys.readouterr()

    # the same run again, from another terminal: my own job, not a conflict, and nothing recorded
    assert main(["submit", sweep, *one, "--executor", "local"]) == 1
    assert f"already running as your local job {job}" in capsys.readouterr().err
    assert main(["submit", sweep, *one, "--executor", "local", "--skip-done"]) == 0
    assert f"already running as your local job {job}" in capsys.readouterr().err
    assert not (run_dir / "prove_conflicts.json").exists()

    deadline = time.monotonic() + 240
    while not gate.reached:
        assert time.monotonic() < deadline, "the training did not reach iteration 10"
        time.sleep(0.2)
    assert main(["cancel", sweep, *one]) == 0
    capsys.readouterr()
    assert main(["status", sweep, *one, "--json"]) == 0
    [row] = json_out(capsys)
    assert row["state"] == "cancelled" and row["lock_holder"] is None
    assert main(["status", sweep, "--state", "cancelled", "--json"]) == 0
    assert [r["model"] for r in json_out(capsys)] == ["demo_fcn_r18_tiny"]
    # `status RUN_DIR`: who cancelled it and when, not the KeyboardInterrupt the cancel left in the job's stderr
    assert main(["status", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert f"cancelled by {current_user()} on " in shown and "--model demo_fcn_r18_tiny --variant DEMO_BS4" in shown
    assert "KeyboardInterrupt" not in shown and "Traceback" not in shown, shown

    gate.open()
    # nothing restarts it behind the back of whoever cancelled it
    assert main(["resubmit", sweep, "--lock-conflicts", "--executor", "local"]) == 0
    assert main(["resubmit", sweep, "--failed", "--executor", "local"]) == 0
    assert main(["submit", sweep, "--variant", "DEMO_BS4", "--executor", "local", "--skip-done", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"skipped DEMO_BS4/demo_fcn_r18_tiny: cancelled by {current_user()}" in err
    assert "--model demo_fcn_r18_tiny --variant DEMO_BS4" in err  # how to train it again
    meta = read_meta(run_dir)
    assert meta is not None and meta.job_id == job and meta.cancelled_at is not None

    # named again: it trains, resumes from its checkpoint at 10, and submit --wait ends with the table
    assert main(["submit", sweep, *one, "--executor", "local", "--wait"]) == 0
    captured = capsys.readouterr()
    assert "Completed" in captured.out and "DEMO_BS4" in captured.out
    assert "1 run(s) ended: 1 completed" in captured.err


def test_a_holder_who_cancels_ends_the_conflict_too(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Met alice's claim, then alice cancelled: the run is cancelled, not a conflict to resubmit."""
    from prove_jobs.claims import LockHolder
    from prove_jobs.conflicts import record_conflict

    sweep = str(SWEEPS / "demo.toml")
    run_dir = demo / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    run_dir.mkdir(parents=True)
    held = write_meta(run_dir, RunMeta(model="demo_fcn_r18_tiny", variant="DEMO_REF", executor="local",
                                       host=current_host(), user="alice", job_id="4242", pid=4242,
                                       submitted_at=time.time(), max_iters=40))
    record_conflict(run_dir, LockHolder("alice", held.host, "local", "4242", 4242, held.submitted_at, sweep), sweep)
    write_meta(run_dir, RunMeta(**{**held.to_json(), "cancelled_at": time.time(), "cancelled_by": "alice"}))
    assert main(["status", sweep, "--model", "demo_fcn_r18_tiny", "--variant", "DEMO_REF", "--json"]) == 0
    assert json_out(capsys)[0]["state"] == "cancelled"
    assert main(["resubmit", sweep, "--lock-conflicts", "--executor", "local"]) == 0
    err = capsys.readouterr().err
    assert "cancelled by alice" in err and "not restarted" in err
    assert read_meta(run_dir).cancelled_by == "alice"  # type: ignore[union-attr]


# --- 4, 9. a dead hand-started run; elapsed ---------------------------------------------------------------


def _hand_started(root: Path, seed: int, *, days_ago: float) -> Path:
    """A copy of a run mmengine trained without prove-jobs (no prove_run.json), its files last written days ago."""
    work = root / "DEMO_REF" / "baseline" / "cityscapes" / f"hand_{seed}"
    bench_module().write_run(work, seed)
    when = time.time() - days_ago * 86400
    for path in work.rglob("*"):
        os.utime(path, (when, when))
    return work


def test_a_dead_hand_started_run_is_stopped_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = _hand_started(tmp_path, 10, days_ago=3)  # stopped at 77,500 of 80,000
    scalars = sorted(work.glob("*/vis_data/scalars.json"))[-1]
    with scalars.open("a") as fh:
        fh.write('{"lr": 0.001, "loss": 0.3')  # killed while writing: a torn last line
    old = scalars.stat().st_mtime - 3 * 86400
    os.utime(scalars, (old, old))
    assert main(["status", "--root", str(tmp_path), "--json"]) == 0
    [row] = json_out(capsys)
    assert row["state"] == "stopped" and row["iter"] == 77_500 and row["eta_s"] is None
    assert any("logs idle since" in note and "not finished" in note for note in row["notes"])
    assert any("last line is cut off" in note for note in row["notes"])

    live = _hand_started(tmp_path / "live", 20, days_ago=0)  # written a moment ago: running, on that evidence
    assert main(["status", str(live), "--json"]) == 0
    assert json_out(capsys)[0]["state"] == "running"
    done = _hand_started(tmp_path / "done", 21, days_ago=3)  # reached its last iteration: completed, however old
    assert main(["status", str(done), "--json"]) == 0
    assert json_out(capsys)[0]["state"] == "completed"


def test_elapsed_ends_with_the_logs_with_and_without_metadata(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    work = _hand_started(tmp_path, 10, days_ago=1)
    assert main(["status", str(work), "--json"]) == 0
    without = json_out(capsys)[0]["elapsed_s"]
    write_meta(work, RunMeta(model=work.name, variant="DEMO_REF", executor="local", host=current_host(),
                             user=current_user(), job_id="1", submitted_at=1.0, started_at=2.0, failed_at=3.0))
    assert main(["status", str(work), "--json"]) == 0
    first = json_out(capsys)[0]
    time.sleep(1.1)
    assert main(["status", str(work), "--json"]) == 0
    again = json_out(capsys)[0]
    assert first["state"] == "failed" and without is not None and without > 0
    assert without == first["elapsed_s"] == again["elapsed_s"]  # not counting on after the run died


# --- 5, 6, 18. which runs status looks at -------------------------------------------------------------------


def test_status_of_a_folder_that_holds_no_run_says_so(demo: Path) -> None:
    done = cli("status", str(demo / "runs"))
    one_line_error(done, str(demo / "runs"), "not a run dir", f"did you mean --root {demo / 'runs'}")


def test_status_root_finds_runs_at_any_depth(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for model in ("demo_fcn_r18_tiny", "demo_segformer_tiny"):
        run_dir = demo / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / model
        run_dir.mkdir(parents=True)
        write_meta(run_dir, RunMeta(model=model, variant="DEMO_REF", finished_at=5.0))
    hand = demo / "work_dirs" / "my_experiment"
    (hand / "20260101_101010").mkdir(parents=True)
    (hand / "segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py").write_text("# mmengine's copy of the config\n")
    for root, expected in ((demo, 3), (demo / "runs", 2), (demo / "runs" / "DEMO_REF", 2)):
        assert main(["status", "--root", str(root), "--json"]) == 0
        rows = json_out(capsys)
        assert len(rows) == expected, (root, rows)
        assert {(r["variant"], r["model"]) for r in rows if r["variant"] == "DEMO_REF"} == {
            ("DEMO_REF", "demo_fcn_r18_tiny"), ("DEMO_REF", "demo_segformer_tiny")}
    named = [r for r in json_out_of(["status", "--root", str(demo), "--json"], capsys) if r["variant"] == "work_dirs"]
    assert [r["model"] for r in named] == ["my_experiment"]  # its folder, not the config mmengine copied into it
    assert main(["status", "--root", str(demo / "data")]) == 0
    assert "no runs under" in capsys.readouterr().err
    one_line_error((main(["status", str(SWEEPS / "demo.toml"), "--root", str(demo)]), capsys.readouterr().err),
                   "not both")


def json_out_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    assert main(argv) == 0
    return json_out(capsys)


def test_status_of_a_sweep_whose_data_root_is_missing_warns(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(SWEEPS / "demo.toml"), "--data-root", str(tmp_path / "nowhere")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and f"data root {tmp_path / 'nowhere'} does not exist" in err


# --- 7, 8. submit refuses before writing anything; previews need no variable ------------------------------------


def test_auto_executor_trains_a_gpu_sweep_only_on_slurm(tmp_path: Path, demo: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH where python is, and sinfo is not: "a cluster that does not answer"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir), "AWARE_DATA_ROOT": str(demo / "runs"),
           "CITYSCAPES_ROOT": str(demo / "data" / "cityscapes")}
    before = sorted(demo.rglob("*"))
    done = cli("submit", str(SWEEPS / "cityscapes.toml"), "--model", "pspnet_r50", env=env)
    one_line_error(done, "sinfo", "GPUs", "--executor local")
    assert sorted(demo.rglob("*")) == before  # nothing written
    done = cli("submit", str(SWEEPS / "demo.toml"), "--dry-run", env=env)  # asks for no GPU: this machine, then
    assert done.returncode == 0 and "local process" in done.stdout, done.stderr
    # the README's `submit SWEEP --dry-run` without a controller: the SLURM script a GPU sweep would be sent
    done = cli("submit", str(SWEEPS / "cityscapes.toml"), "--model", "pspnet_r50", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH" in done.stdout and "showing what would be submitted to SLURM" in done.stderr, done.stderr
    assert sorted(demo.rglob("*")) == before


def test_a_dry_run_checks_what_a_real_submit_checks(tmp_path: Path) -> None:
    """Issue 20: with no data root and no dataset, `submit --dry-run` printed 18 "would submit" lines, exit 0,
    and the real submit then refused twice."""
    env = {**os.environ, "AWARE_DATA_ROOT": str(tmp_path / "nowhere"), "CITYSCAPES_ROOT": str(tmp_path / "no-data")}
    done = cli("submit", str(SWEEPS / "cityscapes.toml"), "--executor", "slurm", "--dry-run", env=env)
    assert done.returncode == 1, done.stderr
    refusals = [line for line in done.stderr.splitlines() if "a real submit would refuse" in line]
    assert any("data root does not exist" in line for line in refusals), done.stderr
    assert any("dataset_root" in line for line in refusals), done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_submit_checks_the_dataset_before_any_claim(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("DEMO_ROOT", str(tmp_path))  # runs/, but no data/cityscapes
    code = main(["submit", str(SWEEPS / "demo.toml"), "--executor", "local"])
    one_line_error((code, capsys.readouterr().err), "demo.toml: dataset_root", "does not exist", "demo-data")
    assert list((tmp_path / "runs").iterdir()) == []


HIDE_TORCH = """
import sys
class NoTrainExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "mmengine", "mmseg"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTrainExtra())
from prove_jobs.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_login_node_without_torch_refuses_a_local_submission(demo: Path) -> None:
    done = subprocess.run([sys.executable, "-c", HIDE_TORCH, "submit", str(SWEEPS / "demo.toml"),
                           "--executor", "local"], capture_output=True, text=True, timeout=120, check=False)
    one_line_error(done, "train extra", "torch")
    assert runs_in(demo) == []


def test_plan_and_render_are_previews_submit_and_status_refuse(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWARE_DATA_ROOT"}
    done = cli("plan", str(SWEEPS / "cityscapes.toml"), "--model", "pspnet_r50", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "${AWARE_DATA_ROOT}" in done.stdout
    assert done.stderr.count("warning:") == 1 and "export AWARE_DATA_ROOT" in done.stderr
    assert cli("plan", str(SWEEPS / "cityscapes.toml"), "--json", env=env).returncode == 0
    for command in ("submit", "status"):
        one_line_error(cli(command, str(SWEEPS / "cityscapes.toml"), env=env, cwd=tmp_path),
                       "data_root: ${AWARE_DATA_ROOT} is not set", "--data-root")
    assert list(tmp_path.iterdir()) == []


# --- 10, 11, 12. the dashboard on narrow terminals, live progress, output that is not a terminal -----------------


def test_narrow_terminals_keep_state_progress_miou_and_eta(reference_root: Path) -> None:
    env = {**os.environ, "COLUMNS": "60"}
    args = ["status", str(SWEEPS / "cityscapes.toml"), "--data-root", str(reference_root), "--variant", BS16]
    narrow = cli(*args, env=env)
    header = next(line for line in narrow.stdout.splitlines() if "Model" in line)
    assert "State" in header and "mIoU" in header, narrow.stdout
    assert "not shown at 60 columns:" in narrow.stdout
    for width in range(60, 201, 10):  # what goes first as the terminal narrows: the least useful
        out = cli(*args, env={**os.environ, "COLUMNS": str(width)}).stdout
        header = next(line for line in out.splitlines() if "Model" in line).split()
        assert {"Model", "State", "mIoU"} <= set(header), (width, header)
        if {"Best", "Job", "Elapsed"} & set(header):
            assert {"Progress", "ETA"} <= set(header), (width, header)
        if "Node" not in header:
            assert "Node" in out.split(f"not shown at {width} columns:")[1], (width, out)


def test_live_progress_shows_speed_memory_loss_and_the_percentage(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    scalars = run_dir / "20260101_000000" / "vis_data" / "scalars.json"
    scalars.parent.mkdir(parents=True)
    records = [{"lr": 0.01, "data_time": 0.4, "loss": 1.25, "time": 0.5, "iter": i, "memory": 2048, "step": i}
               for i in (5, 10)]
    scalars.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_meta(run_dir, RunMeta(model="demo_fcn_r18_tiny", variant="DEMO_REF", executor="local", host=current_host(),
                                user=current_user(), job_id=str(os.getpid()), pid=os.getpid(), submitted_at=1.0,
                                started_at=2.0, attempts=1, max_iters=40))
    [row] = json_out_of(["status", str(run_dir), "--json"], capsys)
    assert row["state"] == "running"
    assert (row["sec_per_iter"], row["data_time"], row["memory_mb"], row["loss"], row["lr"]) == (
        0.5, 0.4, 2048, 1.25, 0.01)
    assert row["log_path"] == str(scalars)
    env = {**os.environ, "COLUMNS": "220"}
    table = cli("status", str(run_dir), env=env).stdout
    assert "25%" in table and "0.50 s/it (data 80%)" in table and "2.0 GB" in table and "1.25" in table


def test_output_that_is_not_a_terminal(reference_root: Path, tmp_path: Path) -> None:
    args = ["status", str(SWEEPS / "cityscapes.toml"), "--data-root", str(reference_root), "--variant", BS16]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = cli(*args, env=env)
    assert piped.returncode == 0
    assert all(line == line.rstrip() for line in piped.stdout.splitlines()), "lines padded with spaces"
    assert "░" * 10 + "   0%" in piped.stdout and "█" * 10 + " 100%" in piped.stdout  # readable in a pipe
    for bad in ("0", "-1", "soon"):
        one_line_error(cli(*args, "--watch", bad), "--watch")
    frames = tmp_path / "frames.txt"
    with frames.open("w") as out:
        watch = subprocess.Popen([*CLI, *args, "--watch", "0.2"], stdout=out, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: frames.read_text().count("Ctrl-C to quit") >= 3)
        watch.terminate()
        watch.wait(timeout=30)
    assert frames.read_text().count("WEIGHTS_CITYSCAPES") >= 3  # each frame written, one after the other
    lines = subprocess.Popen([*CLI, *args, "--watch", "0.2", "--json"], stdout=subprocess.PIPE, text=True)
    assert lines.stdout is not None
    first, second = lines.stdout.readline(), lines.stdout.readline()
    lines.terminate()
    lines.wait(timeout=30)
    assert [len(json.loads(line)) for line in (first, second)] == [6, 6]  # one JSON list a refresh


def _wait_for(condition: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "did not happen"
        time.sleep(0.1)


# --- 13. wait ---------------------------------------------------------------------------------------------


def test_wait_counts_only_the_runs_it_waited_for(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = str(SWEEPS / "demo.toml")
    assert main(["wait", sweep]) == 0
    err = capsys.readouterr().err
    assert "nothing to wait for: none of these 4 run(s) has been submitted" in err and "ended:" not in err
    run_dir = demo / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    run_dir.mkdir(parents=True)
    write_meta(run_dir, RunMeta(model="demo_fcn_r18_tiny", variant="DEMO_REF", started_at=1.0, failed_at=2.0,
                                error="RuntimeError: CUDA out of memory\nmore lines"))
    assert main(["wait", sweep]) == 1
    err = capsys.readouterr().err
    assert "waiting for 1 run(s) (3 never submitted)" in err and "1 run(s) ended: 1 failed" in err
    assert "RuntimeError: CUDA out of memory" in err and "more lines" not in err


# --- 14, 15, 16, 17. validation, demo-data, help, plan ------------------------------------------------------------


def test_intervals_longer_than_the_schedule_and_bad_sweep_fields(tmp_path: Path, templates_copy: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (templates_copy / "variants" / "NEVER.toml").write_text(
        "max_iters = 100\nbatch_size = 2\nlr = 0.01\nval_interval = 200\n")
    sweep = demo_sweep_with(tmp_path, templates_copy, **{'variants = ["DEMO_REF", "DEMO_BS4"]': 'variants = ["NEVER"]'})
    one_line_error(cli("plan", str(sweep)), "NEVER.toml: val_interval", "more than max_iters (100)", "never validate")
    crop = write_sweep(tmp_path, (SWEEPS / "demo.toml").read_text().replace("crop_size = [64, 64]", "crop_size = 64"),
                       "crop.toml")
    one_line_error(cli("plan", str(crop)), "crop.toml: crop_size")
    env = {k: v for k, v in os.environ.items() if k != "CITYSCAPES_ROOT"}
    text = (SWEEPS / "cityscapes.toml").read_text().replace("${CITYSCAPES_ROOT:-/datasets/cityscapes}",
                                                            "${CITYSCAPES_ROOT}")
    nodata = write_sweep(tmp_path, text, "nodata.toml")
    one_line_error(cli("submit", str(nodata), "--data-root", str(tmp_path), env=env),
                   "nodata.toml: dataset_root: ${CITYSCAPES_ROOT} is not set", "export CITYSCAPES_ROOT",
                   "--data-root sets where runs go")


def test_demo_data_on_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    one_line_error(cli("demo-data", str(target)), str(target), "is a file")
    one_line_error(cli("demo-data", str(target / "below")), "cannot write")


def test_every_command_and_option_has_help_and_an_example() -> None:
    import argparse

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)
    for name, sub in subparsers.choices.items():
        assert sub.description and "example:" in (sub.epilog or "") and f"prove-jobs {name}" in (sub.epilog or "")
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)
    assert "(default: 2)" in subparsers.choices["wait"].format_help()
    assert "run dir" in subparsers.choices["status"].format_help()


def test_plan_shows_what_each_run_asks_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = str(SWEEPS / "cityscapes.toml")
    rows = json_out_of(["plan", sweep, "--data-root", str(tmp_path), "--model", "mask2former_swin-b", "--json"], capsys)
    by_variant = {r["variant"]: r["resources"] for r in rows}
    assert by_variant["CITYSCAPES_REPLICATION"]["timeout_min"] == 2880  # the variant's override
    assert by_variant["WEIGHTS_CITYSCAPES"]["mem_gb"] == 96  # the model's override
    assert (by_variant[BS16]["partition"], by_variant[BS16]["gpus_per_node"]) == ("gpu", 1)
    assert main(["plan", sweep, "--data-root", str(tmp_path), "--model", "mask2former_swin-b"]) == 0
    table = capsys.readouterr().out
    assert "Partition" in table and "Time limit" in table and "96 GB" in table and "48 h" in table


# --- 19. the report ------------------------------------------------------------------------------------------


def test_the_report_says_when_and_from_what_and_shows_no_empty_sections(demo: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = demo / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    run_dir.mkdir(parents=True)
    write_meta(run_dir, RunMeta(model="demo_fcn_r18_tiny", variant="DEMO_REF", user="alice", started_at=1.0,
                                failed_at=2.0, error="FileNotFoundError: leftImg8bit/train\ntraceback..."))
    plots = tmp_path / "plots"
    assert main(["report", str(SWEEPS / "demo.toml"), "--out", str(tmp_path / "r.md"), "--plots", str(plots)]) == 0
    assert "no run has a validation yet: no plot written" in capsys.readouterr().err
    assert not plots.exists()
    md = (tmp_path / "r.md").read_text()
    assert "Generated by prove-jobs on " in md and str(SWEEPS / "demo.toml") in md
    assert "## Training Progress" not in md
    assert "❌ demo_fcn_r18_tiny: Failed (alice) — FileNotFoundError: leftImg8bit/train" in md
    assert "traceback..." not in md


def test_report_plots_have_integer_iterations_and_mark_failed_runs(reference_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the report extra")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    run_dir = reference_root / BS16 / "baseline" / "cityscapes" / "segnext_mscan-b"
    meta = read_meta(run_dir)
    assert meta is not None
    write_meta(run_dir, RunMeta(**{**meta.to_json(), "finished_at": None, "failed_at": 2.0e9}))
    captured: list[Any] = []
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(figure: Any, *args: Any, **kwargs: Any) -> None:
        captured.append(figure)
        real_savefig(figure, *args, **kwargs)

    matplotlib.figure.Figure.savefig = keep  # type: ignore[method-assign]
    try:
        assert main(["report", str(SWEEPS / "cityscapes.toml"), "--data-root", str(reference_root),
                     "--plots", str(tmp_path / "plots"), "--out", str(tmp_path / "report.md")]) == 0
    finally:
        matplotlib.figure.Figure.savefig = real_savefig  # type: ignore[method-assign]
    [figure] = [f for f in captured if "BS=16" in f.axes[0].get_title()]
    axes = figure.axes[0]
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert "segnext_mscan-b (failed)" in labels
    assert all(float(t).is_integer() for t in axes.get_xticks())
    pyplot.close("all")


def test_repo_has_no_leftover_of_an_old_layout() -> None:
    """The README's table names every module of the package."""
    readme = (REPO / "README.md").read_text()
    for module in sorted((REPO / "prove_jobs").glob("*.py")):
        if not module.name.startswith("_"):
            assert f"prove_jobs/{module.name}" in readme, module.name
    assert TEMPLATES.is_dir() and shutil.which(sys.executable)


def test_report_from_another_folder_warns_that_the_data_root_is_not_there(tmp_path: Path) -> None:
    """Issue 20: `report SWEEP` from another folder (the demo's relative data root) wrote an empty report, exit 0,
    every run "Not submitted", where `status` from the same folder warned that the data root does not exist."""
    env = {k: v for k, v in os.environ.items() if k != "DEMO_ROOT"}
    done = cli("report", str(SWEEPS / "demo.toml"), "--out", str(tmp_path / "report.md"), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"data root {tmp_path / 'demo' / 'runs'} does not exist" in done.stderr, done.stderr
    status = cli("status", str(SWEEPS / "demo.toml"), env=env, cwd=tmp_path)
    assert f"data root {tmp_path / 'demo' / 'runs'} does not exist" in status.stderr, status.stderr


@pytest.mark.slow
@needs_training
def test_ctrl_c_during_submit_wait_says_the_jobs_keep_running(demo: Path, templates_copy: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: a real SIGINT to `submit --wait` printed only "interrupted" while every job trained on."""
    import signal

    gate = stall_templates(templates_copy, 10, monkeypatch)
    sweep = str(demo_sweep_with(demo, templates_copy))
    one = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    waiting = subprocess.Popen([*CLI, "submit", sweep, *one, "--executor", "local", "--wait"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
                               # as at a terminal: SIGINT not ignored even if this test runs in the background
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not gate.reached:
            assert time.monotonic() < deadline and waiting.poll() is None, "the training did not reach iteration 10"
            time.sleep(0.2)
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 130, err
        assert "the 1 job(s) keep running" in err and f"`prove-jobs wait {sweep}`" in err, err
        assert f"`prove-jobs cancel {sweep}`" in err and "Traceback" not in err, err
        assert main(["status", sweep, *one, "--json"]) == 0
        [row] = json_out(capsys)
        assert row["state"] == "running", row  # Ctrl-C stopped the waiting, not the job
    finally:
        waiting.kill()
        main(["cancel", sweep, *one])
        gate.open()
