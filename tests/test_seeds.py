"""Seeds: each (model, variant, seed) is a run of its own; the report compares means, with their spread.

Statistics are checked against numbers computed here, independently of prove_jobs.report.stats
(Student t quantiles from a table); the logs are written by mmengine's own LocalVisBackend.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import SWEEPS, demo_sweep_with, write_logs, write_sweep

from prove_jobs.cli import main
from prove_jobs.identity import current_host
from prove_jobs.metadata import RunMeta, write_meta

T975 = {2: 4.3027, 4: 2.7764}  # Student t, 97.5 % quantile, by degrees of freedom


def _seeds_sweep(folder: Path, templates: Path, seeds: str = "[0, 1, 2]") -> Path:
    return demo_sweep_with(folder, templates, "seeds.toml", **{"seed = 0": "", 'variants = ["DEMO_REF", "DEMO_BS4"]':
                                                              f'variants = ["DEMO_REF", "DEMO_BS4"]\nseeds = {seeds}'})


def test_each_seed_is_a_run_in_its_own_folder(tmp_path: Path, templates_copy: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _seeds_sweep(tmp_path, templates_copy)
    assert main(["plan", str(sweep), "--data-root", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * 2 * 3  # models x variants x seeds
    first = [r for r in rows if r["model"] == "demo_fcn_r18_tiny" and r["variant"] == "DEMO_REF"]
    assert [r["seed"] for r in first] == [0, 1, 2]
    assert [Path(r["run_dir"]).name for r in first] == ["seed0", "seed1", "seed2"]
    assert Path(first[0]["run_dir"]).parent == tmp_path / "runs/DEMO_REF/baseline/cityscapes/demo_fcn_r18_tiny"
    assert len({r["config_hash"] for r in first}) == 3  # another seed is another training

    assert main(["render", str(sweep), "--data-root", str(tmp_path / "runs"), "--model", "demo_fcn_r18_tiny",
                 "--variant", "DEMO_REF", "--seed", "2", "--out", str(tmp_path / "rendered")]) == 0
    rendered = list((tmp_path / "rendered").iterdir())
    assert len(rendered) == 1 and "randomness = dict(seed=2)" in rendered[0].read_text()

    # one seed: the layout and the hash of a sweep without seeds
    one = _seeds_sweep(tmp_path, templates_copy, "[0]")
    assert main(["plan", str(one), "--data-root", str(tmp_path / "runs"), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert main(["plan", str(SWEEPS / "demo.toml"), "--data-root", str(tmp_path / "runs"), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert [(r["run_dir"], r["seed"]) for r in single] == [(r["run_dir"], 0) for r in before]


@pytest.mark.parametrize(("seeds", "field", "message"), [
    ("[1, 1]", "seeds", "lists a seed twice"),
    ("[]", "seeds", "non-empty list of seeds"),
    ("[-1]", "seeds", "whole numbers >= 0"),
    ('["a"]', "seeds", "whole numbers >= 0"),
])
def test_bad_seeds_are_one_line_naming_the_field(tmp_path: Path, templates_copy: Path, seeds: str, field: str,
                                                 message: str, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _seeds_sweep(tmp_path, templates_copy, seeds)
    assert main(["plan", str(sweep), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"seeds.toml: {field}" in err and message in err


def test_seeds_and_a_training_seed_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (SWEEPS / "demo.toml").read_text().replace('variants = ["DEMO_REF", "DEMO_BS4"]',
                                                      'variants = ["DEMO_REF", "DEMO_BS4"]\nseeds = [0, 1]')
    text = text.replace("[training]", "[training]\nseed = 0")  # (the shipped sweeps no longer set it)
    assert main(["plan", str(write_sweep(tmp_path, text)), "--data-root", str(tmp_path)]) == 2
    assert "seeds: set either seeds = [...] or [training] seed, not both" in capsys.readouterr().err
    assert main(["plan", str(SWEEPS / "demo.toml"), "--data-root", str(tmp_path), "--seed", "3"]) == 2
    assert "--seed: no variant of sweep demo trains seed 3" in capsys.readouterr().err


def test_variant_seeds_override(tmp_path: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _seeds_sweep(tmp_path, templates_copy, "[0]")
    sweep.write_text(sweep.read_text() + "\n[variant_seeds]\nDEMO_BS4 = [4, 5]\n")
    assert main(["plan", str(sweep), "--data-root", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["variant"], r["seed"], Path(r["run_dir"]).name) for r in rows if r["model"] == "demo_fcn_r18_tiny"} == {
        ("DEMO_REF", 0, "demo_fcn_r18_tiny"), ("DEMO_BS4", 4, "seed4"), ("DEMO_BS4", 5, "seed5")}


# The statistics: three seeds of the reference, three of BS4, a run of BS4 still going.
REF_SEEDS = {0: 30.0, 1: 31.0, 2: 32.0}
BS4_SEEDS = {0: 26.0, 1: 27.0, 2: 28.0}


def _seeded_root(root: Path, sweep: Path) -> None:
    from prove_jobs.spec import load_sweep

    loaded = load_sweep(sweep, data_root=root)
    for run in loaded.runs(["demo_fcn_r18_tiny"]):
        variant = loaded.variant(run.variant)
        final = (REF_SEEDS if run.variant == "DEMO_REF" else BS4_SEEDS)[run.seed or 0]
        curve = [(variant.max_iters // 2, final - 5, 80.0), (variant.max_iters, final, 90.0)]
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_logs(run.run_dir, variant.max_iters, variant.max_iters, curve, 60.0)
        write_meta(run.run_dir, RunMeta(model=run.model, variant=run.variant, executor="local", host=current_host(),
                                        user="alice", job_id="1", submitted_at=1.0e9, started_at=1.0e9 + 1,
                                        finished_at=1.0e9 + 100, max_iters=variant.max_iters,
                                        seed=loaded.training_seed(run)))


def test_report_gives_means_spread_interval_and_verdict(tmp_path: Path, templates_copy: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    _long_variants(templates_copy)
    sweep = _seeds_sweep(tmp_path, templates_copy)
    _seeded_root(tmp_path / "runs", sweep)
    args = ["report", str(sweep), "--data-root", str(tmp_path / "runs"), "--model", "demo_fcn_r18_tiny"]
    assert main([*args, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]

    ref, bs4 = list(REF_SEEDS.values()), list(BS4_SEEDS.values())
    assert result["seeds"]["DEMO_REF"]["n"] == 3 and result["seeds"]["DEMO_REF"]["values"] == ref
    assert result["seeds"]["DEMO_BS4"]["std"] == pytest.approx(statistics.stdev(bs4))
    assert result["final_miou"] == {"DEMO_REF": 31.0, "DEMO_BS4": 27.0}
    assert result["difference_vs_reference"] == -4.0
    # Welch with equal n (3) and equal variances (1): df = 2(n-1) = 4, se = sqrt(1/3 + 1/3)
    half = T975[4] * math.sqrt(2 / 3)
    assert result["difference_ci95"] == pytest.approx([-4.0 - half, -4.0 + half], abs=1e-3)
    assert result["verdict"] == "worse than reference"

    assert main(args) == 0
    md = capsys.readouterr().out
    interval = f"**-4.00 [{-4 - half:.1f}, {-4 + half:.1f}] pts**"
    row = f"| demo_fcn_r18_tiny | 31.00 ± 1.00 (n=3) | 27.00 ± 1.00 (n=3) | {interval} "
    assert row + "| worse than reference |" in md
    assert "Welch's t" in md


def test_one_seed_a_side_is_a_single_run(tmp_path: Path, templates_copy: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    _long_variants(templates_copy)
    sweep = _seeds_sweep(tmp_path, templates_copy, "[0]")
    sweep.write_text(sweep.read_text() + "\n[variant_seeds]\nDEMO_BS4 = [0, 1, 2]\n")
    _seeded_root(tmp_path / "runs", sweep)
    assert main(["report", str(sweep), "--data-root", str(tmp_path / "runs"), "--model", "demo_fcn_r18_tiny",
                 "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["seeds"]["DEMO_REF"]["n"] == 1 and result["difference_ci95"] is None
    assert result["verdict"] == "single run" and result["difference_vs_reference"] == -3.0


@pytest.mark.slow
def test_demo_with_two_seeds_end_to_end(demo: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = str(_seeds_sweep(demo, templates_copy, "[0, 1]"))
    assert main(["submit", sweep, "--executor", "local", "--wait"]) == 0
    capsys.readouterr()
    assert main(["status", sweep, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and {r["state"] for r in rows} == {"completed"}
    assert sorted((r["model"], r["variant"], r["seed"]) for r in rows if r["model"] == "demo_fcn_r18_tiny") == [
        ("demo_fcn_r18_tiny", v, k) for v in ("DEMO_BS4", "DEMO_REF") for k in (0, 1)]
    assert all(Path(r["run_dir"]).name == f"seed{r['seed']}" for r in rows)

    assert main(["status", sweep]) == 0
    table = capsys.readouterr().out
    assert "Seed" in table.splitlines()[3] or any(line.split()[:2] == ["Model", "Seed"] for line in table.splitlines())

    assert main(["report", sweep, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for result in report["results"]:
        for variant in ("DEMO_REF", "DEMO_BS4"):
            finals = sorted(r["last_miou"] for r in rows if r["model"] == result["model"] and r["variant"] == variant)
            assert sorted(result["seeds"][variant]["values"]) == pytest.approx(finals, abs=1e-4)  # 4 decimals
            assert result["seeds"][variant]["mean"] == pytest.approx(sum(finals) / 2, abs=1e-4)
        assert result["difference_ci95"] is not None and result["verdict"] in (
            "within noise", "better than reference", "worse than reference")
    assert main(["report", sweep]) == 0
    md = capsys.readouterr().out
    assert md.count("(n=2)") >= 4 and "± " in md and "| Verdict |" in md


def _long_variants(templates: Path) -> None:
    for name in ("DEMO_REF", "DEMO_BS4"):  # conftest.write_logs logs every 500 iterations
        path = templates / "variants" / f"{name}.toml"
        path.write_text(path.read_text().replace("max_iters = 40", "max_iters = 4000")
                        .replace("max_iters = 20", "max_iters = 2000"))


def test_report_shows_what_was_trained_not_todays_template(tmp_path: Path, templates_copy: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    from prove_jobs.render import render_run, write_rendered
    from prove_jobs.spec import load_sweep

    _long_variants(templates_copy)
    sweep_file = _seeds_sweep(tmp_path, templates_copy, "[0]")
    sweep = load_sweep(sweep_file, data_root=tmp_path / "runs")
    for run in sweep.runs(["demo_fcn_r18_tiny"]):
        write_rendered(render_run(sweep, run))  # what the job trains with, as submit writes it
    _seeded_root(tmp_path / "runs", sweep_file)
    ref = templates_copy / "variants" / "DEMO_REF.toml"
    ref.write_text(ref.read_text().replace("lr = 0.01", "lr = 0.05"))  # changed after the runs finished

    assert main(["report", str(sweep_file), "--data-root", str(tmp_path / "runs"), "--model",
                 "demo_fcn_r18_tiny"]) == 0
    md = capsys.readouterr().out
    assert "| **Base LR** | 0.01 | 0.02 (2× scaled) |" in md  # as trained
    assert "- DEMO_REF: trained with lr 0.01; the template now gives 0.05" in md


def test_report_root_and_text_only_run_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from conftest import bench_module

    bench = bench_module()
    root = tmp_path / "root"
    for k in (1, 2, 3):  # three hand-started 80k trainings of three resumed starts each, no prove-jobs metadata
        bench.write_run(bench.run_dir_of(root, k), k)
    assert main(["report", "--root", str(root), "--format", "json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert {r["variant"] for r in before["runs"]} == {"AUG_STRONG", "LR_HALF", "LR_DOUBLE"}
    assert len(before["times"]) == 3 and all(t["seconds"] > 0 for t in before["times"])

    for vis in root.glob("*/*/*/*/*/vis_data"):
        shutil.rmtree(vis)  # only the text logs are left
    assert main(["report", "--root", str(root), "--format", "json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [(t["model"], t["variant"]) for t in after["times"]] == [(t["model"], t["variant"]) for t in before["times"]]
    for old, new in zip(before["times"], after["times"], strict=True):
        assert new["seconds"] == pytest.approx(old["seconds"], abs=5)  # the text log prints `time` to 4 decimals
        assert new["wall_seconds"] == old["wall_seconds"] and new["to_95_seconds"] is not None

    assert main(["report", "--root", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such folder (--root)" in capsys.readouterr().err


def test_curves_in_the_terminal(tmp_path: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("plotext", reason="the report extra (plotext) draws curves in the terminal")
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    _long_variants(templates_copy)
    sweep = _seeds_sweep(tmp_path, templates_copy)
    _seeded_root(tmp_path / "runs", sweep)
    assert main(["report", str(sweep), "--data-root", str(tmp_path / "runs"), "--terminal"]) == 0
    text = capsys.readouterr().out
    assert "demo_fcn_r18_tiny: validation mIoU" in text and "\x1b[" not in text  # a pipe: no colour codes
    assert "DEMO_REF (mean of 3 seeds)" in text and "DEMO_BS4 (mean of 3 seeds)" in text
    assert "## Validation mIoU Results" not in text  # the curves instead of the report
    assert max(len(line) for line in text.splitlines()) <= 120

    one = tmp_path / "runs/DEMO_BS4/baseline/cityscapes/demo_fcn_r18_tiny/seed1"
    assert main(["status", str(one), "--curve"]) == 0
    text = capsys.readouterr().out
    legend = next(line for line in text.splitlines() if "DEMO_BS4" in line and "DEMO_REF" in line)
    assert "mean" not in legend  # seed 1 of each variant, not the means
    assert "Iteration" in text and "27.00%" in text  # and the run's own table


@pytest.mark.slow
def test_cancel_one_seed(demo: Path, templates_copy: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import stall_templates, wait_until

    gate = stall_templates(templates_copy, 10, monkeypatch)  # each training holds after iteration 10
    sweep = str(_seeds_sweep(demo, templates_copy, "[0, 1]"))
    one = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    assert main(["submit", sweep, *one, "--executor", "local"]) == 0  # both seeds, one array
    capsys.readouterr()

    def states() -> dict[int, str]:
        assert main(["status", sweep, *one, "--json"]) == 0
        return {row["seed"]: row["state"] for row in json.loads(capsys.readouterr().out)}

    wait_until("both seeds training", lambda: states() == {0: "running", 1: "running"})
    assert main(["cancel", sweep, *one, "--seed", "1"]) == 0
    capsys.readouterr()
    assert states() == {0: "running", 1: "cancelled"}
    assert main(["submit", sweep, "--variant", "DEMO_BS4", "--executor", "local", "--skip-done", "--dry-run"]) == 0
    assert "--model demo_fcn_r18_tiny --variant DEMO_BS4 --seed 1" in capsys.readouterr().err  # how to train it again
    assert main(["cancel", sweep, *one]) == 0
    gate.open()
    assert states() == {0: "cancelled", 1: "cancelled"}


def test_a_root_with_one_seed_then_several_shows_every_run(tmp_path: Path, templates_copy: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The same sweep trained first with one seed (<model>/), then with three: seed 0 is the one-seed run, kept in
    <model>/ (issue 20: it used to train seed 0 again in <model>/seed0/ and count it twice), seeds 1 and 2 in
    <model>/seed<k>/ inside it. (A root that already holds a seed0/ too: tests/test_counted_once.py.)"""
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    _long_variants(templates_copy)
    _seeded_root(tmp_path / "runs", _seeds_sweep(tmp_path, templates_copy, "[0]"))
    _seeded_root(tmp_path / "runs", _seeds_sweep(tmp_path, templates_copy, "[0, 1, 2]"))
    assert main(["status", "--root", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((Path(r["run_dir"]).name, r["seed"]) for r in rows if r["variant"] == "DEMO_REF") == [
        ("demo_fcn_r18_tiny", 0), ("seed1", 1), ("seed2", 2)]


def test_seed_under_root_picks_the_runs_that_trained_with_it(tmp_path: Path, templates_copy: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``--seed 0`` under ``--root`` names the runs trained with seed 0, in every command: the one-seed run in
    <model>/ (its metadata says seed 0), not only a seed0/ folder (there is none here)."""
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    _long_variants(templates_copy)
    _seeded_root(tmp_path / "runs", _seeds_sweep(tmp_path, templates_copy, "[0]"))
    _seeded_root(tmp_path / "runs", _seeds_sweep(tmp_path, templates_copy, "[0, 1, 2]"))
    root = ["--root", str(tmp_path / "runs"), "--variant", "DEMO_REF"]
    assert main(["status", *root, "--seed", "0", "--json"]) == 0
    assert [Path(r["run_dir"]).name for r in json.loads(capsys.readouterr().out)] == ["demo_fcn_r18_tiny"]
    for seed in (0, 2):
        assert main(["report", *root, "--seed", str(seed), "--format", "json"]) == 0
        [result] = json.loads(capsys.readouterr().out)["results"]
        assert result["seeds"]["DEMO_REF"]["values"] == [REF_SEEDS[seed]]
    assert main(["report", *root, "--seed", "7"]) == 2  # was an IndexError from an empty report
    assert "is of the --model/--variant/--seed asked for" in capsys.readouterr().err


def test_the_readmes_seeds_recipe_works_on_the_shipped_demo_sweep(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: adding `seeds = [0, 1]` to demo.toml as the README says was refused ("set either seeds = [...] or
    [training] seed, not both"): the shipped sweeps no longer set [training] seed."""
    text = (SWEEPS / "demo.toml").read_text()
    sweep = tmp_path / "demo.toml"
    variants = 'variants = ["DEMO_REF", "DEMO_BS4"]'
    sweep.write_text(text.replace(variants, variants + "\nseeds = [0, 1]"))
    assert main(["plan", str(sweep), "--data-root", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted({r["seed"] for r in rows}) == [0, 1] and len(rows) == 8
