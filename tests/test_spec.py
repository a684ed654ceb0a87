from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SWEEPS, TEMPLATES, write_sweep

from prove_jobs.errors import SpecError
from prove_jobs.spec import load_sweep

MINIMAL = """
dataset = "cityscapes"
data_root = "{root}"
dataset_root = "/data/cityscapes"
models = ["demo_fcn_r18_tiny"]
variants = ["DEMO_REF"]
"""


def test_shipped_sweep_gives_the_reports_training_configurations(tmp_path: Path) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=tmp_path)
    table = {
        v.name: (v.max_iters, v.batch_size, v.total_samples, v.gradient_steps, v.lr, v.warmup_iters,
                 v.val_interval, v.checkpoint_interval, v.crop_size)
        for v in sweep.variants
    }
    assert table == {
        "CITYSCAPES_REPLICATION": (80000, 2, 160000, 80000, 0.01, 500, 8000, 8000, (512, 512)),
        "WEIGHTS_CITYSCAPES": (20000, 16, 320000, 20000, 0.08, 500, 2000, 2000, (512, 512)),
        "WEIGHTS_CITYSCAPES_BS8": (40000, 8, 320000, 40000, 0.04, 1000, 4000, 4000, (512, 512)),
    }
    assert sweep.models == (
        "pspnet_r50", "deeplabv3plus_r50", "hrnet_hr48", "segformer_mit-b3", "segnext_mscan-b", "mask2former_swin-b",
    )
    # Two of the three LRs are derived by the linear rule, one is given: both give the report's numbers.
    assert sweep.variant("CITYSCAPES_REPLICATION").lr_rule == "given"
    assert sweep.variant("WEIGHTS_CITYSCAPES").lr_rule.startswith("linear: 0.01 x 8")


def test_run_dirs_follow_the_reports_layout(tmp_path: Path) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=tmp_path)
    runs = sweep.runs(variants=["WEIGHTS_CITYSCAPES_BS8"], models=["segformer_mit-b3"])
    assert [r.run_dir for r in runs] == [tmp_path / "WEIGHTS_CITYSCAPES_BS8/baseline/cityscapes/segformer_mit-b3"]
    assert len(sweep.runs()) == 18


def test_data_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWARE_DATA_ROOT", str(tmp_path))
    assert load_sweep(SWEEPS / "cityscapes.toml").data_root == tmp_path
    monkeypatch.delenv("AWARE_DATA_ROOT")
    with pytest.raises(SpecError, match=r"cityscapes.toml: data_root: \$\{AWARE_DATA_ROOT\} is not set"):
        load_sweep(SWEEPS / "cityscapes.toml")


def test_resources_merge_variant_then_model_overrides(tmp_path: Path) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=tmp_path)
    by_name = {r.name: sweep.resources_for(r) for r in sweep.runs()}
    assert by_name["CITYSCAPES_REPLICATION/pspnet_r50"].timeout_min == 2880
    assert by_name["WEIGHTS_CITYSCAPES/pspnet_r50"].timeout_min == 1440
    m2f = by_name["CITYSCAPES_REPLICATION/mask2former_swin-b"]
    assert (m2f.mem_gb, m2f.timeout_min, m2f.partition) == (96, 2880, "gpu")


def test_linear_scaling_and_given_lr_agree(templates_copy: Path, tmp_path: Path) -> None:
    (templates_copy / "variants" / "GIVEN.toml").write_text(
        "max_iters = 20000\nbatch_size = 16\nlr = 0.08\nwarmup_iters = 500\nval_interval = 2000\n"
    )
    body = MINIMAL.format(root=tmp_path).replace('["DEMO_REF"]', '["GIVEN", "WEIGHTS_CITYSCAPES"]')
    sweep = load_sweep(write_sweep(tmp_path, body + f'templates = "{templates_copy}"\n'))
    assert sweep.variant("GIVEN").lr == sweep.variant("WEIGHTS_CITYSCAPES").lr == 0.08


BAD_SWEEPS = [
    ("models", 'models = ["nope"]', "models: unknown model 'nope' (known: "),
    ("variants", 'variants = ["NOPE"]', "variants: unknown variant 'NOPE' (known: "),
    ("missing dataset", "dataset = None", "dataset: missing (required)"),
    ("typo", 'datset = "x"', "datset: unknown field (valid fields are: "),
    ("models type", 'models = "pspnet_r50"', "models: must be a non-empty list of names"),
    ("resources typo", '[resources]\npartiton = "gpu"', "resources.partiton: unknown field (valid fields are: "),
    ("resources type", "[resources]\ncpus_per_task = 0", "resources.cpus_per_task: must be an integer >= 1"),
    ("override of a model not in the sweep", '[resources.models.pspnet_r50]\nmem_gb = 1',
     "resources.models.pspnet_r50: not in this sweep"),
    ("toml", "models = [", "not valid TOML"),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_SWEEPS, ids=[c[0] for c in BAD_SWEEPS])
def test_bad_sweep_files_name_file_and_field(tmp_path: Path, case: str, change: str, message: str) -> None:
    body = MINIMAL.format(root=tmp_path)
    key = change.split(" =")[0]
    if change.endswith("= None"):
        body = "\n".join(line for line in body.splitlines() if not line.startswith(key + " "))
    elif key in {"models", "variants"}:
        body = "\n".join(change if line.startswith(key + " ") else line for line in body.splitlines())
    else:
        body += "\n" + change + "\n"
    path = write_sweep(tmp_path, body)
    with pytest.raises(SpecError) as caught:
        load_sweep(path)
    text = str(caught.value)
    assert text.startswith(str(path) + ":"), text
    assert message in text
    assert "\n" not in text


BAD_VARIANTS = [
    ("batch_size = 0", "batch_size: must be a positive integer, got 0"),
    ("batch_size = 2.5", "batch_size: must be a positive integer, got 2.5"),
    ("lr = 0.01\nlr_scaling = {base_lr = 0.01, base_batch_size = 2}", "lr: give exactly one of"),
    ("lr_scaling = {base_lr = 0.01}", "lr_scaling.base_batch_size: must be a positive integer"),
    ("lr_scaling = {rule = 'sqrt', base_lr = 0.01, base_batch_size = 2}", "lr_scaling.rule: only 'linear'"),
    ("warmup_iters = 99999", "warmup_iters: must be an integer in [0, max_iters)"),
    ("crop_size = [512]", "crop_size: must be [height, width]"),
    ("max_iter = 5", "max_iter: unknown field"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_VARIANTS)
def test_bad_variant_files_name_file_and_field(templates_copy: Path, tmp_path: Path, extra: str, message: str) -> None:
    base = {"max_iters": "1000", "batch_size": "2", "val_interval": "100", "lr": "0.01"}
    lines = dict(base)
    for line in extra.splitlines():
        key, value = line.split(" = ", 1)
        lines[key] = value
    if "lr_scaling" in lines and "lr" in lines and not extra.startswith("lr = "):
        del lines["lr"]
    variant = templates_copy / "variants" / "BROKEN.toml"
    variant.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    body = MINIMAL.format(root=tmp_path).replace('"DEMO_REF"', '"BROKEN"') + f'templates = "{templates_copy}"\n'
    with pytest.raises(SpecError) as caught:
        load_sweep(write_sweep(tmp_path, body))
    assert str(caught.value).startswith(f"{variant}: ")
    assert message in str(caught.value)


def test_missing_sweep_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope.toml: sweep file not found"):
        load_sweep(tmp_path / "nope.toml")


def test_unknown_run_filters_are_refused(tmp_path: Path) -> None:
    sweep = load_sweep(SWEEPS / "demo.toml", data_root=tmp_path)
    # the option's mistake, named as such (was "demo.toml: models: unknown model", as if the file were wrong)
    with pytest.raises(SpecError, match=r"^--model: 'pspnet_r50' is not a model of sweep demo"):
        sweep.runs(models=["pspnet_r50"])
    with pytest.raises(SpecError, match=r"^--variant: 'WEIGHTS_CITYSCAPES' is not a variant of sweep demo"):
        sweep.runs(variants=["WEIGHTS_CITYSCAPES"])


def test_a_sweeps_templates_folder_adds_to_the_shipped_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: `templates = "tpl"` replaced the shipped templates ("unknown model 'demo_segformer_tiny' (known: )",
    then "tpl/run_config.py.tmpl: cannot read template"). A folder with one model of its own, and a variant that
    shadows a shipped one, now uses the shipped rest."""
    from prove_jobs.cli import main

    (tmp_path / "tpl" / "models").mkdir(parents=True)
    (tmp_path / "tpl" / "variants").mkdir()
    fcn = (TEMPLATES / "models" / "demo_fcn_r18_tiny.py").read_text()
    (tmp_path / "tpl" / "models" / "my_fcn.py").write_text(fcn)
    (tmp_path / "tpl" / "variants" / "DEMO_REF.toml").write_text(
        (TEMPLATES / "variants" / "DEMO_REF.toml").read_text().replace("max_iters = 40", "max_iters = 60"))
    text = (SWEEPS / "demo.toml").read_text().replace('models = ["demo_segformer_tiny", "demo_fcn_r18_tiny"]',
                                                      'models = ["demo_segformer_tiny", "my_fcn"]\ntemplates = "tpl"')
    (tmp_path / "s.toml").write_text(text)
    assert main(["plan", str(tmp_path / "s.toml"), "--data-root", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["model"], r["variant"], r["max_iters"]) for r in rows} == {
        ("demo_segformer_tiny", "DEMO_REF", 60), ("my_fcn", "DEMO_REF", 60),
        ("demo_segformer_tiny", "DEMO_BS4", 20), ("my_fcn", "DEMO_BS4", 20)}
    (tmp_path / "s.toml").write_text(text.replace('"tpl"', '"nowhere"'))
    assert main(["plan", str(tmp_path / "s.toml")]) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err
