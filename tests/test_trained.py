"""What the runs trained with, read back from their own config files (prove_jobs/report/trained.py).

Runs are rendered by prove-jobs itself (``render_run`` + ``write_rendered``: what ``submit`` writes
into a run dir); a hand-started run's config is what mmengine dumps (``prove-jobs render`` writes the
same ``Config.pretty_text``, and ``Config.dump`` of mmseg's own config); the template is changed in a
copy after the runs were rendered, as a user edits a variant after its runs finished.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO, SWEEPS, bench_module, demo_sweep_with

from prove_jobs.cli import main
from prove_jobs.plan import configuration_rows
from prove_jobs.report.trained import TrainedConfig, read_trained_config, trained_rows
from prove_jobs.spec import Sweep, Variant, load_sweep

BS16, REF = "WEIGHTS_CITYSCAPES", "CITYSCAPES_REPLICATION"
SEGFORMER, FCN = "demo_segformer_tiny", "demo_fcn_r18_tiny"


def render(sweep: Sweep, variants: list[str] | None = None, models: list[str] | None = None) -> Sweep:
    from prove_jobs.render import render_run, write_rendered

    for run in sweep.runs(models or (), variants or ()):
        write_rendered(render_run(sweep, run))
    return sweep


def recorded(sweep: Sweep) -> dict[str, list[tuple[str, TrainedConfig | None]]]:
    """What the report passes: each variant's runs, by model, with what each recorded (None: nothing)."""
    runs: dict[str, list[tuple[str, TrainedConfig | None]]] = {}
    for run in sweep.runs():
        runs.setdefault(run.variant, []).append((run.model, read_trained_config(run.run_dir)))
    return runs


# the checkpoint each model starts from, as the weight cache names the file (model.py points there)
STARTS_FROM = {"pspnet_r50": "resnet50_v1c-2cccc1ad.pth", "segformer_mit-b3": "mit_b3_20220624-13b1141c.pth"}


def expected(variant: Variant, source: Path, *, sync_bn: bool = False) -> TrainedConfig:
    init = next((name for model, name in STARTS_FROM.items() if model in str(source)), "from scratch")  # demo_*
    return TrainedConfig(max_iters=variant.max_iters, batch_size=variant.batch_size, crop_size=variant.crop_size,
                         optimizer="SGD", lr=variant.lr, warmup=variant.warmup_iters, scheduler="Poly",
                         val_interval=variant.val_interval, checkpoint_interval=variant.checkpoint_interval, seed=0,
                         evaluation="whole image", sync_bn=sync_bn, init=init, source=source)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


# --- prove-jobs' own runs ----------------------------------------------------------------------------------


def test_a_rendered_run_records_its_variants_recipe(tmp_path: Path) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=tmp_path)
    render(sweep, [REF], ["pspnet_r50", "segformer_mit-b3"])
    # WEIGHTS_CITYSCAPES on 4 GPUs: each process loads 4 of the 16 a step trains on
    render(replace(sweep, resources=replace(sweep.resources, gpus_per_node=4)), [BS16], ["segformer_mit-b3"])
    for run in sweep.runs(["pspnet_r50", "segformer_mit-b3"], [REF]) + sweep.runs(["segformer_mit-b3"], [BS16]):
        assert read_trained_config(run.run_dir) == expected(sweep.variant(run.variant), run.config_file,
                                                            sync_bn=run.variant == BS16), run.name
    assert "batch_size=4," in sweep.runs(["segformer_mit-b3"], [BS16])[0].config_file.read_text()

    rows, notes = trained_rows(sweep.variants, recorded(sweep))
    assert rows == configuration_rows(sweep.variants) and notes == []
    assert dict(rows)["Base LR"] == ["0.01", "0.08 (8× scaled)", "0.04 (4× scaled)"]


def test_a_variant_changed_after_training_shows_what_was_trained_and_says_so(tmp_path: Path,
                                                                             templates_copy: Path) -> None:
    sweep_file = demo_sweep_with(tmp_path, templates_copy)
    render(load_sweep(sweep_file, data_root=tmp_path / "runs"))
    edit(templates_copy / "variants" / "DEMO_REF.toml", "lr = 0.01", "lr = 0.02")
    edit(templates_copy / "variants" / "DEMO_REF.toml", "max_iters = 40", "max_iters = 60")
    edit(templates_copy / "variants" / "DEMO_BS4.toml", "base_lr = 0.01", "base_lr = 0.005")
    now = load_sweep(sweep_file, data_root=tmp_path / "runs")

    rows, notes = trained_rows(now.variants, recorded(now))
    table, today = dict(rows), dict(configuration_rows(now.variants))
    assert today["Base LR"] == ["0.02", "0.01 (2× scaled)"] and today["Iterations"] == ["60", "20"]
    # the factor is against what the reference (DEMO_REF) trained with, 0.01: not against today's templates
    assert table["Base LR"] == ["0.01", "0.02 (2× scaled)"]
    assert table["Iterations"] == ["40", "20"] and table["Gradient steps"] == ["40", "20"]
    assert table["Total samples"] == ["80", "80"]  # derived: 40 x 2, 20 x 4
    assert {k: v for k, v in table.items() if k not in ("Base LR", "Iterations", "Gradient steps",
                                                          "Total samples")} == {
        k: v for k, v in today.items() if k not in ("Base LR", "Iterations", "Gradient steps", "Total samples")}
    assert notes == [
        "DEMO_REF: trained with iterations 40; the template now gives 60",
        "DEMO_REF: trained with lr 0.01; the template now gives 0.02",
        "DEMO_BS4: trained with lr 0.02; the template now gives 0.01",
    ]


def test_runs_of_one_variant_that_trained_differently_are_all_shown_and_named(tmp_path: Path,
                                                                              templates_copy: Path) -> None:
    sweep_file = demo_sweep_with(tmp_path, templates_copy)
    render(load_sweep(sweep_file, data_root=tmp_path / "runs"), ["DEMO_BS4"])
    edit(templates_copy / "variants" / "DEMO_BS4.toml", "base_lr = 0.01", "base_lr = 0.005")
    now = render(load_sweep(sweep_file, data_root=tmp_path / "runs"), ["DEMO_BS4"], [FCN])  # re-rendered: 0.01

    runs = recorded(now)
    assert [config is None for _, config in runs["DEMO_REF"]] == [True, True]  # never rendered: the template's
    rows, notes = trained_rows(now.variants, runs)
    table = dict(rows)
    assert table["Base LR"] == ["0.01", "0.02 (2× scaled) / 0.01"]  # against DEMO_REF's 0.01
    assert table["Iterations"] == ["40", "20"]  # agreed: one value
    assert notes == [f"DEMO_BS4: {SEGFORMER} trained with lr 0.02, {FCN} with lr 0.01"]


def test_notes_group_the_runs_and_fields_left_out_fall_back_to_the_template() -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=Path("/nonexistent"))
    v = sweep.variant(BS16)
    full = expected(v, Path("config.py"))
    half = replace(full, lr=0.16, max_iters=None, scheduler="CosineAnnealingLR")
    runs = {BS16: [("a", full), ("b", half), ("c", half), ("d", None)], "NOT_IN_SWEEP": [("e", half)]}
    rows, notes = trained_rows([v], runs)
    table = dict(rows)
    assert table["Base LR"] == ["0.08 / 0.16 (2× scaled)"]  # its own reference: runs disagree, the template's 0.08
    assert table["Iterations"] == ["20,000"] and table["LR scheduler"] == ["Poly / CosineAnnealingLR"]
    assert notes == [f"{BS16}: a trained with lr 0.08, b and c with lr 0.16",
                     f"{BS16}: a trained with LR scheduler Poly, b and c with LR scheduler CosineAnnealingLR"]
    only = TrainedConfig(lr=0.16)  # a config that tells nothing else: every other cell is the template's
    rows, notes = trained_rows([v], {BS16: [("a", only), ("b", only)]})
    assert [cells for _, cells in rows] == [["0.16"] if label == "Base LR" else cells
                                             for label, cells in configuration_rows([v])]
    assert notes == [f"{BS16}: trained with lr 0.16; the template now gives 0.08"]
    per_gpu = TrainedConfig(batch_size=2, batch_is_per_gpu=True)
    rows, notes = trained_rows([v], {BS16: [("a", per_gpu)]})
    # the GPU count is unknown: no total (was "40,000 per GPU", a per-GPU figure in a row of totals)
    assert dict(rows)["Batch size"] == ["2 per GPU"] and dict(rows)["Total samples"] == ["? (GPU count unknown)"]
    assert notes == [f"{BS16}: trained with batch size 2 per GPU; the template now gives 16"]
    # a hand-started root's variant is what its runs recorded: 16 per GPU where it "gives" 16 is no difference
    same = TrainedConfig(batch_size=16, batch_is_per_gpu=True)
    assert trained_rows([v], {BS16: [("a", same)]})[1] == []


def test_lr_factors_are_against_what_the_reference_trained() -> None:
    """"0.08 (8× scaled)" as the reference report writes it: the factor of the reference variant's trained LR,
    whichever variant is the reference (``--reference``), also for runs whose recipes only their configs say."""
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=Path("/nonexistent"))
    given = [replace(v, lr_rule="as trained", lr_scale=1.0) for v in sweep.variants]  # as report --root builds them
    runs = {v.name: [("m", TrainedConfig(lr=v.lr))] for v in given}
    rows, _ = trained_rows(given, runs, REF)
    assert dict(rows)["Base LR"] == ["0.01", "0.08 (8× scaled)", "0.04 (4× scaled)"]
    rows, _ = trained_rows(given, runs, BS16)
    assert dict(rows)["Base LR"] == ["0.01 (0.125× scaled)", "0.08", "0.04 (0.5× scaled)"]


# --- a run started by hand: mmengine's dump ---------------------------------------------------------------

READ = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from prove_jobs.report.trained import read_trained_config
found = [read_trained_config(Path(p)) for p in sys.argv[1:]]
heavy = sorted(m for m in ("mmengine", "mmseg", "torch", "mmcv") if m in sys.modules)
print(json.dumps({"heavy": heavy, "found": [asdict(c) if c else None for c in found]}, default=str))
"""


def test_a_hand_started_run_is_read_from_mmengines_dump_without_mmengine(tmp_path: Path) -> None:
    pytest.importorskip("mmengine", reason="mmengine writes the dumps this reads")
    import importlib.util

    mmseg = importlib.util.find_spec("mmseg")
    if mmseg is None or mmseg.origin is None:
        pytest.skip("mmsegmentation's configs are dumped")
    from mmengine.config import Config

    from prove_jobs import mmcv_shim

    # 1. the flat config of a demo run, as `prove-jobs render` writes it (mmengine's pretty_text), put into a
    #    work dir at the sweep's layout by hand, under the config's own name, no prove/ folder
    out = tmp_path / "rendered"
    assert main(["render", str(SWEEPS / "demo.toml"), "--variant", "DEMO_BS4", "--model", SEGFORMER,
                 "--out", str(out)]) == 0
    sweep = load_sweep(SWEEPS / "demo.toml", data_root=tmp_path / "runs")
    [demo] = sweep.runs([SEGFORMER], ["DEMO_BS4"])
    demo.run_dir.mkdir(parents=True)
    shutil.copy(out / f"DEMO_BS4__{SEGFORMER}.py", demo.run_dir / "segformer_bs4.py")
    # 2. mmseg's own SegFormer config (8 GPUs x 2 images), dumped by mmengine as a Runner dumps it: alone, and
    #    beside the log of the start that ran it on 4 GPUs (mmengine 0.10.7's log, as benchmarks/ writes it)
    name = "segformer_mit-b0_8xb2-160k_ade20k-512x512"
    mmcv_shim.install_mmengine_package_lookup()
    cfg = Config.fromfile(str(Path(mmseg.origin).parent / ".mim" / "configs" / "segformer" / f"{name}.py"),
                          import_custom_modules=False)
    alone, logged = tmp_path / "work_dirs" / name, tmp_path / "four_gpus" / name
    for work_dir in (alone, logged):
        work_dir.mkdir(parents=True)
        cfg.dump(str(work_dir / f"{name}.py"))
    (logged / "20260101_000000").mkdir()
    (logged / "20260101_000000" / "20260101_000000.log").write_text(bench_module().log_header("20260101_000000", None))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", READ, str(demo.run_dir), str(alone), str(logged)], env=env,
                          capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(done.stdout)
    assert result["heavy"] == []  # read without mmengine, mmseg or torch
    found = [TrainedConfig(**{**c, "crop_size": tuple(c["crop_size"]), "source": Path(c["source"]),
                              "rejected": tuple(c["rejected"])})
             for c in result["found"]]
    assert found[0] == expected(sweep.variant("DEMO_BS4"), demo.run_dir / "segformer_bs4.py")
    hand = TrainedConfig(max_iters=160000, batch_size=2, batch_is_per_gpu=True, crop_size=(512, 512),
                         optimizer="AdamW", lr=6e-05, warmup=1500, scheduler="Poly", val_interval=16000,
                         checkpoint_interval=16000, seed=None, evaluation="whole image", sync_bn=None,
                         init="mit_b0_20220624-7e0fe6dd.pth", source=alone / f"{name}.py")
    assert found[1] == hand  # no log: the batch of one GPU, and it says so
    assert found[2] == replace(hand, batch_size=8, batch_is_per_gpu=False, source=logged / f"{name}.py")
    # a second .py in the work dir: the one named like the work dir is mmseg's dump; none so named: ambiguous
    (alone / "notes.py").write_text("lr = 1\n")
    assert read_trained_config(alone) == hand
    os.rename(alone / f"{name}.py", alone / "other.py")
    assert read_trained_config(alone) is None


# --- files that are not what they seem ---------------------------------------------------------------------


def demo_run(tmp_path: Path) -> tuple[Sweep, Path]:
    sweep = render(load_sweep(SWEEPS / "demo.toml", data_root=tmp_path / "runs"), ["DEMO_REF"], [FCN])
    return sweep, sweep.runs([FCN], ["DEMO_REF"])[0].run_dir


def test_a_symbolic_link_is_never_followed(tmp_path: Path) -> None:
    sweep, run_dir = demo_run(tmp_path)
    config = run_dir / "prove" / "config.py"
    planted = tmp_path / "planted.py"
    planted.write_text(config.read_text().replace("lr=0.01", "lr=0.5"))
    config.unlink()
    config.symlink_to(planted)
    assert read_trained_config(run_dir) is None
    (run_dir / "config.py").symlink_to(planted)  # nor a link where mmengine's dump would be
    assert read_trained_config(run_dir) is None
    (run_dir / "config.py").unlink()
    shutil.copy(planted, run_dir / "config.py")  # a plain dump beside the planted link: that is read
    # (prove's config.py, not a flat dump: where the weights start is in model.py, so unknown here)
    assert read_trained_config(run_dir) == replace(expected(sweep.variant("DEMO_REF"), run_dir / "config.py"), lr=0.5,
                                                   init=None)
    (run_dir / "config.py").unlink()
    shutil.move(run_dir / "prove", tmp_path / "prove")
    (run_dir / "prove").symlink_to(tmp_path / "prove")  # nor a linked prove/ folder
    (tmp_path / "prove" / "config.py").unlink()
    shutil.copy(planted, tmp_path / "prove" / "config.py")
    assert read_trained_config(run_dir) is None


GARBAGE = {
    "binary": b"\x00\xff\xfe" * 100,
    "not python": b"this is not = a config (\n",
    "empty": b"",
    "calls and attributes": b"lr = get_lr()\noptim_wrapper = dict(optimizer=dict(type=SGD, lr=lr))\n"
                            b"train_cfg = dict(max_iters=_base_.max_iters, val_interval=100)\n",
    "changed after binding": b"train_cfg = dict(max_iters=5, val_interval=5)\nalias = train_cfg\n"
                             b"alias.update(max_iters=500)\nrandomness = dict(seed=3)\nrandomness['seed'] = 4\n",
    "blow-ups": b"a = 99999999999\n" + b"a = a * a\n" * 60 + b"s = [1]\n" + b"s = s + s\n" * 60
                + b"n = [1]\n" + b"n = [n, n]\n" * 80 + b"t = n == n\nu = 1 if n else 2\nv = n[0][1][0]\n"
                + b"w = 1" + b" + 1" * 990 + b"\n" + b"train_cfg = dict(max_iters=10, val_interval=2)\n",
    "too deep to parse": b"w = 1" + b" + 1" * 20000 + b"\ntrain_cfg = dict(max_iters=10)\n",
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_broken_or_hostile_config_gives_none_or_what_it_plainly_says(tmp_path: Path, case: str) -> None:
    _, run_dir = demo_run(tmp_path)
    (run_dir / "prove" / "config.py").write_bytes(GARBAGE[case])
    found = read_trained_config(run_dir)
    plain = {"calls and attributes": TrainedConfig(val_interval=100),
             "changed after binding": TrainedConfig(),
             "blow-ups": TrainedConfig(max_iters=10, val_interval=2)}
    # model.py is the demo's, untouched: it still says the run starts from scratch
    if case in plain:
        assert found == replace(plain[case], source=run_dir / "prove" / "config.py", init="from scratch")
    else:
        assert found is None or found == TrainedConfig(source=run_dir / "prove" / "config.py", init="from scratch")


def test_a_truncated_fifo_or_huge_config_gives_none_or_part(tmp_path: Path) -> None:
    _, run_dir = demo_run(tmp_path)
    config = run_dir / "prove" / "config.py"
    text = config.read_text()
    half = text[: text.index("optim_wrapper")]  # cut at a statement: what came before is read
    config.write_text(half)
    found = read_trained_config(run_dir)
    assert found is not None and found.lr is None and found.max_iters is None
    assert found.batch_size == 2 and found.crop_size == (64, 64)
    config.write_text(text[: text.index("optim_wrapper = dict(") + 21])  # cut inside a statement: not Python
    assert read_trained_config(run_dir) is None
    config.write_text(text + "#" * (1 << 20))
    assert read_trained_config(run_dir) is None  # over 1 MB: not a config
    config.unlink()
    os.mkfifo(config)  # opened without blocking, refused as not a file
    assert read_trained_config(run_dir) is None
    assert read_trained_config(tmp_path / "no such run") is None


def test_the_module_imports_no_training_stack() -> None:
    code = ("import sys, prove_jobs.report.trained as t; "
            "print(sorted(m for m in ('mmengine', 'mmseg', 'torch', 'mmcv') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
