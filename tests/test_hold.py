"""Issue 23: a submission whose first runs fail alike is held (prove_jobs.hold), `prove-jobs release` after the fix,
and `submit --smoke N` (prove_jobs.smoke). The pure logic here; the real cluster in test_slurm_hold.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import TEMPLATES, demo_sweep_with
from fake_scheduler import calls

from prove_jobs import hold
from prove_jobs.cli import main
from prove_jobs.hold import End, error_shape, first_alike
from prove_jobs.identity import current_user
from prove_jobs.metadata import RunMeta, write_meta
from prove_jobs.runs import Run


def test_error_shape_matches_the_same_error_in_two_runs() -> None:
    a = "KeyError: 'decode_head.foo' at /data/runs/DEMO_REF/baseline/cityscapes/demo_fcn_r18_tiny/prove/config.py:12"
    b = "KeyError: 'decode_head.foo' at /data/runs/DEMO_BS4/baseline/cityscapes/demo_segformer_tiny/prove/config.py:31"
    assert error_shape(a) == error_shape(b) == "KeyError: 'decode_head.foo' at <path>:<n>"
    # numbers, hex addresses, the run's own names
    assert error_shape("RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.2 GiB)") == \
        error_shape("RuntimeError: CUDA out of memory. Tried to allocate 512.5 MiB (GPU 3; 79.2 GiB)")
    assert error_shape("TypeError: <object at 0x7f3a2b1c> is not callable") == \
        error_shape("TypeError: <object at 0x7f00aa00> is not callable")
    assert error_shape("ValueError: demo_fcn_r18_tiny has no head 'x'", names=("demo_fcn_r18_tiny", "DEMO_REF")) == \
        error_shape("ValueError: demo_segformer_tiny has no head 'x'", names=("demo_segformer_tiny", "DEMO_BS4"))
    # only the first line: a traceback's later lines differ from node to node
    assert error_shape("KeyError: 'a'\n  File \"/x/y.py\", line 3") == "KeyError: 'a'"


def test_error_shape_keeps_different_errors_apart() -> None:
    assert error_shape("KeyError: 'decode_head.foo'") != error_shape("KeyError: 'decode_head.bar'")
    assert error_shape("KeyError: 'x'") != error_shape("ValueError: 'x'")
    assert error_shape("FileNotFoundError: /data/a missing") != error_shape("PermissionError: /data/a missing")


def _end(task: str, outcome: str = "failed", early: bool = True, shape: str = "KeyError: 'x'") -> End:
    return End(task=task, run=f"V/m{task}", outcome=outcome, early=early, shape=shape, error=shape)


def test_the_first_two_ends_decide() -> None:
    assert first_alike([_end("0")]) is None  # one failure is a run's, not yet the submission's
    assert first_alike([_end("0"), _end("1")]) == "KeyError: 'x'"
    assert first_alike([_end("0"), _end("1", shape="ValueError: y")]) is None
    assert first_alike([_end("0"), _end("1", early=False)]) is None  # failed after a checkpoint: not early
    assert first_alike([_end("0", outcome="completed", shape=""), _end("1"), _end("2")]) is None  # one trained
    assert first_alike([_end("0"), _end("1"), _end("2")]) is None  # decided by the second, once
    assert first_alike([_end("0"), _end("1")], count=3) is None
    assert first_alike([_end("0"), _end("1"), _end("2")], count=3) == "KeyError: 'x'"


def test_scontrol_words_on_an_array_part_of_which_ended() -> None:
    """`scontrol uhold 524` exits 1 once a task ended (measured on the test cluster): that is not a failure."""
    said = "524_0: Job has already finished\n524_1-3: No error\n"
    assert hold.refused_by(said) == []
    refused = "524_1: Access/permission denied"
    assert hold.refused_by(f"{refused}\n524_2-3: No error\n") == [refused]
    assert hold.refused_by("") == []


def _run(root: Path, model: str, variant: str = "V") -> Run:
    run = Run(model=model, variant=variant, method="baseline", dataset="cityscapes", data_root=root)
    run.run_dir.mkdir(parents=True)
    return run


def test_a_task_ends_and_the_second_alike_holds_its_array(tmp_path: Path, fake_cluster: Path) -> None:
    """The job's side, against the fake cluster: each end is recorded in the submission's ledger; the second early
    failure of the same shape holds the array once, and leaves the note status reads."""
    folder = tmp_path / ".prove-jobs" / "submitit" / current_user()
    folder.mkdir(parents=True)
    runs = [_run(tmp_path, f"m{i}") for i in range(3)]
    for i, run in enumerate(runs):
        write_meta(run.run_dir, RunMeta(model=run.model, variant="V", token=f"t{i}", executor="slurm",
                                        job_id=f"77_{i}", started_at=1.0, user=current_user()))
    starts = [hold.Start(run.run_dir, checkpoint=None, array="77", task=str(i), folder=folder)
              for i, run in enumerate(runs)]
    for i in (0, 1):
        path = runs[i].run_dir / "prove_run.json"
        meta = json.loads(path.read_text())
        path.write_text(json.dumps({**meta, "failed_at": 2.0,
                                    "error": f"KeyError: 'decode_head.foo' in {runs[i].run_dir}/prove/config.py"}))
    hold.ended(starts[0], "t0")
    assert calls(fake_cluster) == []
    hold.ended(starts[1], "t1")
    assert calls(fake_cluster) == [["scontrol", "uhold", "77"]]
    note = hold.read_note(folder, "77")
    assert note is not None and note.error.startswith("KeyError: 'decode_head.foo'") and note.count == 2
    hold.ended(starts[1], "not-mine")  # a job whose claim moved on records nothing
    assert len(hold.read_ledger(folder, "77")) == 2


def test_smoke_combinations_one_per_model_variant_resources(tmp_path: Path) -> None:
    """Seeds change no code path: 2 models x 2 variants x 2 seeds are 4 smoke tests."""
    from prove_jobs.smoke import combinations
    from prove_jobs.spec import load_sweep

    path = demo_sweep_with(tmp_path, TEMPLATES, **{'variants = ["DEMO_REF", "DEMO_BS4"]':
                                                   'variants = ["DEMO_REF", "DEMO_BS4"]\nseeds = [0, 1]'})
    sweep = load_sweep(path, data_root=tmp_path)
    assert len(sweep.runs()) == 8
    picked = combinations(sweep, sweep.runs())
    assert sorted((r.variant, r.model) for r in picked) == sorted({(r.variant, r.model) for r in sweep.runs()})


def test_smoke_config_trains_n_iterations_validates_once_and_saves_nothing() -> None:
    from prove_jobs.smoke import smoke_layer

    layer = smoke_layer(3)
    assert "max_iters=3" in layer and "val_interval=3" in layer and "checkpoint=None" in layer


def _demo_with_broken_variant(demo: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    broken = templates / "models" / "demo_fcn_r18_tiny.py"
    broken.write_text(broken.read_text() + "\nmodel['decode_head']['no_such_key'] = 1\n")
    return demo_sweep_with(tmp_path, templates), broken


@pytest.mark.slow
def test_smoke_local_refuses_a_broken_model_and_submits_nothing(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep, _ = _demo_with_broken_variant(demo, tmp_path)
    code = main(["submit", str(sweep), "--variant", "DEMO_BS4", "--executor", "local", "--smoke", "2"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "smoke test failed: DEMO_BS4/demo_fcn_r18_tiny" in err and "no_such_key" in err, err
    assert "smoke test passed: DEMO_BS4/demo_segformer_tiny" in err, err
    assert not list((demo / "runs").rglob("prove_run.json"))  # nothing of the sweep submitted
    assert not list((demo / "runs").rglob("*.pth"))


@pytest.mark.slow
def test_smoke_local_passes_then_submits(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = demo_sweep_with(tmp_path, TEMPLATES)
    code = main(["submit", str(sweep), "--model", "demo_fcn_r18_tiny", "--executor", "local", "--smoke", "2",
                 "--wait"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("smoke test passed") == 2 and "submitted DEMO_REF/demo_fcn_r18_tiny" in err, err
    scratch = demo / "runs" / ".prove-jobs" / "submitit" / current_user() / "smoke"
    assert not scratch.exists() or not any(scratch.iterdir())  # a smoke that passed leaves nothing
    run_dir = demo / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    assert json.loads((run_dir / "prove_run.json").read_text())["attempts"] == 1  # the smoke was no start
    assert os.path.exists(run_dir / "iter_40.pth")


def test_status_says_in_one_line_why_tasks_are_held(tmp_path: Path) -> None:
    from prove_jobs.states import RunState
    from prove_jobs.status import RunStatus

    folder = hold.job_folder_of(tmp_path, current_user())
    (folder / hold.HOLDS_DIR).mkdir(parents=True)
    note = hold.Note("77", "KeyError: 'decode_head.foo'", ("V/m0", "V/m1"), 2, 1.0, "/s/sweep.toml")
    hold.write_ledger(folder / hold.HOLDS_DIR / "77.json", [_end("0"), _end("1")], note)

    def status(i: int, reason: str) -> RunStatus:
        run = Run(model=f"m{i}", variant="V", method="baseline", dataset="cityscapes", data_root=tmp_path)
        meta = RunMeta(model=run.model, variant="V", executor="slurm", job_id=f"77_{i}", user=current_user(),
                       sweep_file="/s/sweep.toml")
        return RunStatus(run, RunState.PENDING, None, 40, (), meta, "PENDING", pending_reason=reason)

    lines = hold.held_lines([status(2, "JobHeldUser"), status(3, "JobHeldUser"), status(4, "Priority")])
    assert lines == [
        "⏸ 2 queued tasks of job 77 held: its first 2 runs failed alike before any checkpoint (V/m0, V/m1): "
        "KeyError: 'decode_head.foo'; fix the cause, then `prove-jobs release /s/sweep.toml` (or `scontrol release "
        "77` if the fix changed no template)"]
    assert hold.held_lines([status(2, "Priority")]) == []  # released meanwhile: squeue decides, not the note
    (folder / hold.HOLDS_DIR / "77.json").unlink()
    assert hold.held_lines([status(2, "JobHeldUser")]) == []  # held by hand (sbatch --hold): the table says it


def test_release_tells_a_changed_rendering_from_an_unchanged_one(tmp_path: Path) -> None:
    import shutil

    from prove_jobs.release import unchanged
    from prove_jobs.render import render_run, write_rendered
    from prove_jobs.spec import load_sweep

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    sweep = load_sweep(demo_sweep_with(tmp_path, templates), data_root=tmp_path / "runs")
    run = sweep.runs(["demo_fcn_r18_tiny"], ["DEMO_REF"])[0]
    write_rendered(render_run(sweep, run))
    assert unchanged(sweep, run)
    moved = load_sweep(demo_sweep_with(tmp_path, templates, name="renamed.toml"), data_root=tmp_path / "runs")
    assert unchanged(moved, run)  # only the header's sweep path differs
    model = templates / "models" / "demo_fcn_r18_tiny.py"
    model.write_text(model.read_text() + "\n# fixed\n")
    assert not unchanged(sweep, run)
