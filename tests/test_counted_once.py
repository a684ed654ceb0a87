"""Issue 20: a run is counted once. A sweep moving from one seed to several keeps its one-seed run as the seed
it trained (it trains no second seed 0 inside it); a root that already holds both, or two data roots with
the same run, give each (model, variant, seed) one value in the report, and say what was left out."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import SWEEPS, claim, write_logs

from prove_jobs.cli import main
from prove_jobs.runs import Run

pytest.importorskip("mmengine", reason="the test writes logs as mmengine's LocalVisBackend does")
MODEL, VARIANT = "demo_fcn_r18_tiny", "DEMO_REF"


def completed(run_dir: Path, miou: float, seed: int) -> None:
    """A finished run of the demo's DEMO_REF at ``miou``, as prove-jobs records one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(model=MODEL, variant=VARIANT, method="baseline", dataset="cityscapes", data_root=run_dir, path=run_dir)
    write_logs(run_dir, 1000, 1000, [(500, miou - 1, 70.0), (1000, miou, 71.0)], 4.0)  # (a record every 500)
    claim(run, user="me", finished_at=time.time(), started_at=time.time() - 10, seed=seed, pid=None, max_iters=1000)


def seeds_sweep(folder: Path, root: Path) -> Path:
    text = (SWEEPS / "demo.toml").read_text()
    variants = 'variants = ["DEMO_REF", "DEMO_BS4"]'
    sweep = folder / "seeds.toml"
    sweep.write_text(text.replace(variants, f'variants = ["{VARIANT}"]\nseeds = [0, 1]')
                     .replace('models = ["demo_segformer_tiny", "demo_fcn_r18_tiny"]', f'models = ["{MODEL}"]')
                     .replace("${DEMO_ROOT:-demo}/runs", str(root))
                     .replace("${DEMO_ROOT:-demo}/data", str(folder / "data")))
    return sweep


def model_dir(root: Path) -> Path:
    return root / VARIANT / "baseline" / "cityscapes" / MODEL


def test_a_sweep_moving_to_several_seeds_keeps_its_one_seed_run_as_that_seed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    completed(model_dir(root), 26.4, seed=0)  # trained by the one-seed sweep
    assert main(["demo-data", str(tmp_path / "data" / "cityscapes")]) == 0
    sweep = seeds_sweep(tmp_path, root)
    assert main(["plan", str(sweep), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["seed"]: r["run_dir"] for r in rows} == {0: str(model_dir(root)), 1: str(model_dir(root) / "seed1")}
    assert main(["submit", str(sweep), "--executor", "local", "--skip-done", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert f"would submit {VARIANT}/{MODEL}/seed1" in out.err and f"would submit {VARIANT}/{MODEL}/seed0" not in out.err
    assert f"skipped {VARIANT}/{MODEL}/seed0: " in out.err and "already completed" in out.err  # the one-seed run


def test_a_seed_trained_twice_is_counted_once_and_the_other_named(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's root: the one-seed run (seed 0), and the seed0/ and seed1/ a later sweep trained inside it.
    Before, `report --root` gave `"values": [26.4, 26.4, 32.1]` (n=3)."""
    root = tmp_path / "runs"
    completed(model_dir(root), 26.4, seed=0)
    completed(model_dir(root) / "seed0", 26.4, seed=0)
    completed(model_dir(root) / "seed1", 32.1, seed=1)
    assert main(["report", "--root", str(root), "--format", "json"]) == 0
    captured = capsys.readouterr()
    [result] = json.loads(captured.out)["results"]
    assert result["seeds"][VARIANT]["values"] == [26.4, 32.1] and result["seeds"][VARIANT]["n"] == 2
    assert f"{model_dir(root) / 'seed0'}: left out, it trained seed 0 of {VARIANT}/{MODEL}" in captured.err
    # status --root: the two rows of seed 0 say where each is
    assert main(["status", "--root", str(root)]) == 0
    table = capsys.readouterr().out
    assert f"{MODEL} (seed0/)" in table and table.count(MODEL) == 3, table


def test_two_data_roots_are_named_and_one_run_is_counted_once(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A --root above two data roots pooled both into one mean (n=4 in the issue): now the roots are named, and
    the same (model, variant, seed) in both is counted once."""
    for name, miou in (("alice", 26.4), ("bob", 30.0)):
        completed(model_dir(tmp_path / name), miou, seed=0)
    assert main(["report", "--root", str(tmp_path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    [result] = json.loads(captured.out)["results"]
    assert result["seeds"] == {} or result["seeds"][VARIANT]["n"] == 1
    assert f"pooled runs from 2 data roots: {tmp_path / 'alice'}, {tmp_path / 'bob'}" in captured.err
    assert "left out, it trained seed 0" in captured.err
