"""Validate before writing, show what is submitted, follow nothing someone else could have planted,
and lose nothing on a full disk (issue 10). Each test drives the real command."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SWEEPS, make_run, write_logs, write_sweep

from prove_jobs.cli import main
from prove_jobs.metadata import RunMeta, read_meta, write_meta
from prove_jobs.runs import META_FILE, Run

REPO = Path(__file__).resolve().parent.parent
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another user, mount a tmpfs)")


def demo_with_resources(folder: Path, resources: str) -> Path:
    text = (SWEEPS / "demo.toml").read_text()
    text = text.replace('name = "demo"', f'name = "demo"\ntemplates = {str(REPO / "job_templates")!r}')
    return write_sweep(folder, text.replace("[resources]", f"[resources]\n{resources}"))


def failed_run(root: Path, sweep: Path, user: str) -> Run:
    """A run of ``sweep`` under ``root`` whose job (``user``'s, on another host) failed."""
    run = make_run(root)
    write_meta(run.run_dir, RunMeta(model=run.model, variant=run.variant, sweep_file=str(sweep), executor="local",
                                    user=user, host="elsewhere", job_id="1", submitted_at=1.0, started_at=2.0,
                                    failed_at=3.0, error="RuntimeError: boom"))
    return run


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- every executor parameter is checked when the sweep is loaded ----------------------------------------

@pytest.mark.parametrize(("line", "says"), [
    ('"exclusive"', "is not a long sbatch option"),
    ('"-x node1"', "is not a long sbatch option"),
    ('"--time=10"', "set resources.timeout_min instead"),
    ('"--array=0-3"', "prove-jobs sets it itself"),
    ('"--Exclusive"', "is not a long sbatch option"),
])
def test_a_bad_extra_sbatch_is_refused_by_every_command_before_anything_is_written(
        demo: Path, capsys: pytest.CaptureFixture[str], line: str, says: str) -> None:
    sweep = demo_with_resources(demo, f"extra_sbatch = [{line}]")
    for command in (["plan", str(sweep)], ["submit", str(sweep), "--executor", "local"], ["status", str(sweep)]):
        capsys.readouterr()
        assert main(command) == 2, command
        error = one_error_line(capsys)
        assert f"{sweep}: resources.extra_sbatch: " in error and says in error, error
    assert list((demo / "runs").iterdir()) == []  # no claim, no lock, no prove/*.py


def test_an_override_tables_extra_sbatch_is_checked_too(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = demo_with_resources(demo, '[resources.variants.DEMO_REF]\nextra_sbatch = ["--gres=gpu:2"]\n')
    assert main(["plan", str(sweep)]) == 2
    assert "resources.variants.DEMO_REF.extra_sbatch: '--gres=gpu:2': set resources.gpus_per_node instead" in \
        one_error_line(capsys)


# --- --dry-run shows submitit's own batch script -----------------------------------------------------------

def test_dry_run_prints_the_batch_script_submitit_would_submit(demo: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep = demo_with_resources(demo, 'extra_sbatch = ["--exclusive", "#SBATCH --reservation=maint"]')
    assert main(["submit", str(sweep), "--executor", "slurm", "--dry-run"]) == 0
    script = capsys.readouterr().out
    lines = set(script.splitlines())
    job_folder = demo / "runs" / ".prove-jobs" / "submitit"
    for expected in ("#!/bin/bash", "#SBATCH --array=0-3%4", "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1",
                     "#SBATCH --signal=USR2@90", "#SBATCH --job-name=prove:demo", "#SBATCH --exclusive",
                     "#SBATCH --reservation=maint", "#SBATCH --time=30", "#SBATCH --cpus-per-task=1"):
        assert expected in lines, (expected, script)
    assert any(line.startswith(f"#SBATCH --output={job_folder}/") for line in lines), script
    # the job starts through prove-jobs' entry, which checks its pickle before submitit loads it
    assert any(line.startswith("srun --unbuffered --output") and "-m prove_jobs.job_entry" in line for line in lines)
    assert list((demo / "runs").iterdir()) == []


# --- resubmit --root follows only a sweep this user could have named -------------------------------------

@as_root
def test_resubmit_root_refuses_a_recorded_sweep_others_may_rewrite(demo: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The sweep path comes from group-writable JSON, and the sweep names the templates that will be trained."""
    sweep = demo_with_resources(demo, "")
    run = failed_run(demo / "runs", sweep, "nobody")
    os.chown(sweep, 65534, -1)  # nobody's
    os.chmod(sweep, 0o664)  # and its group may rewrite it
    assert main(["resubmit", "--root", str(demo / "runs"), "--failed", "--executor", "local"]) == 2
    error = one_error_line(capsys)
    assert f"the sweep recorded for it, {sweep}, belongs to nobody and others may rewrite it" in error
    assert "prove-jobs resubmit SWEEP" in error
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.user == "nobody"  # nothing submitted


# --- a full disk loses nothing ---------------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mount`` for the block (root only; skips where it cannot mount)."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, filled up later by :func:`fill`."""
    with tmpfs(tmp_path / "full", "2m") as mount:
        yield mount


def fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
        with pytest.raises(OSError) as full:
            os.write(fd, b"\0")
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


@as_root
def test_on_a_full_disk_metadata_writes_fail_in_one_line_and_the_old_file_stays(
        full_disk: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(full_disk.parent / "data" / "cityscapes")
    monkeypatch.setenv("DEMO_ROOT", str(full_disk.parent))
    sweep = demo_with_resources(full_disk.parent, "")
    sweep.write_text(sweep.read_text().replace('"${DEMO_ROOT:-demo}/runs"', json.dumps(str(full_disk / "runs"))))
    args = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_REF"]
    run = failed_run(full_disk / "runs", sweep, "alice")
    write_logs(run.run_dir, 4000, 1000, [(1000, 20.0, 80.0)], 400.0)  # what status reads, and caches
    before = (run.run_dir / META_FILE).read_bytes()
    cache = full_disk / "cache"
    cache.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    fill(full_disk)

    assert main(["submit", str(sweep), *args, "--executor", "local"]) == 2
    error = one_error_line(capsys)
    assert str(run.run_dir) in error and "No space left on device" in error, error
    assert (run.run_dir / META_FILE).read_bytes() == before
    assert not [p.name for p in run.run_dir.rglob("*") if p.name.endswith(".tmp")]  # no temp file left behind

    assert main(["status", str(sweep), *args, "--json"]) == 0
    out = capsys.readouterr()
    [row] = json.loads(out.out)
    assert row["state"] == "failed" and row["error"] == "RuntimeError: boom"
    warnings = [line for line in out.err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "log cache" in warnings[0] and "No space left on device" in warnings[0], warnings


@as_root
@pytest.mark.slow
def test_a_training_that_fills_the_disk_is_failed_with_that_error_and_resumes_from_its_last_checkpoint(
        tmp_path: Path, templates_copy: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmseg", reason="training needs the train extra")
    from conftest import checkpointed, demo_sweep_with, stall_templates

    from prove_jobs.demo_data import make_demo_dataset

    with tmpfs(tmp_path / "disk", "96m") as mount:
        make_demo_dataset(tmp_path / "data" / "cityscapes")
        (mount / "runs").mkdir()
        monkeypatch.setenv("DEMO_ROOT", str(tmp_path))
        gate = stall_templates(templates_copy, 20, monkeypatch)  # held after the checkpoint at 20
        sweep = demo_sweep_with(tmp_path, templates_copy)
        sweep.write_text(sweep.read_text().replace('"${DEMO_ROOT:-demo}/runs"', json.dumps(str(mount / "runs"))))
        args = [str(sweep), "--model", "demo_fcn_r18_tiny", "--variant", "DEMO_REF"]
        assert main(["submit", *args, "--executor", "local"]) == 0
        run_dir = mount / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
        deadline = time.monotonic() + 300
        while not (gate.reached and checkpointed(run_dir) == 20):
            assert time.monotonic() < deadline, "no checkpoint at 20"
            time.sleep(0.2)
        fill(mount)
        gate.open()  # the next checkpoint (at 40) finds no room
        assert main(["wait", *args, "--timeout", "300", "--poll", "0.5"]) == 1
        capsys.readouterr()
        assert main(["status", *args, "--json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["state"] == "failed" and "No space left on device" in (row["error"] or ""), row
        assert checkpointed(run_dir) == 20  # last_checkpoint still names the good one

        (mount / "filler").unlink()
        assert main(["resubmit", *args[:1], "--failed", "--executor", "local", "--wait"]) == 0
        resubmitted = capsys.readouterr().err
        assert main(["status", *args, "--json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["state"] == "completed" and row["iter"] == 40, (row["error"], resubmitted)
        second = sorted(p for p in run_dir.iterdir() if p.name[:8].isdigit())[-1]
        steps = [json.loads(line)["step"] for line in (second / "vis_data" / "scalars.json").read_text().splitlines()
                 if '"loss"' in line]
        assert steps[0] > 20, "the second start did not resume from the checkpoint at 20"
