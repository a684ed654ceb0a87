"""`prove-jobs departures`: every key where a run's config departs from the model-zoo config it inherits.

The comparison itself (pure functions) on hand-written dicts; the attribution to layers on a small
hand-made template set (a local "zoo" config, a model template on it, a run template of the test's
own); the listing on the shipped Cityscapes sweep with mmseg's real configs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SWEEPS, write_sweep

from prove_jobs.cli import main
from prove_jobs.departures import ABSENT, diff, effective, key_text, recipe

needs_mmengine = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mmengine") is None,
    reason="departures reads configs with mmengine (the train extra)",
)


def rows_of(zoo: dict[str, Any], rendered: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(key_text(path), a, b) for path, a, b in diff(zoo, rendered)]


# --- the comparison ---------------------------------------------------------------------------------


def test_dicts_key_by_key_steps_by_type_other_lists_whole() -> None:
    pipeline = [dict(type="LoadImageFromFile"), dict(type="RandomCrop", crop_size=(1024, 1024), cat_max_ratio=0.75),
                dict(type="Resize", scale=(2048, 1024)), dict(type="Resize", scale=(1024, 512))]
    ours = [dict(type="LoadImageFromFile"), dict(type="RandomCrop", crop_size=[512, 512], cat_max_ratio=0.75),
            dict(type="Resize", scale=(2048, 1024)), dict(type="Resize", scale=(512, 256)), dict(type="PackSegInputs")]
    zoo = {"optim_wrapper": dict(optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999)),
                                 paramwise_cfg=dict(custom_keys=dict(head=dict(lr_mult=10.0)))),
           "train_dataloader": dict(batch_size=1, dataset=dict(pipeline=pipeline)),
           "model": dict(data_preprocessor=dict(mean=[123.675, 116.28, 103.53]))}
    rendered = {"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.08, momentum=0.9), clip_grad=None),
                "train_dataloader": dict(batch_size=16, dataset=dict(pipeline=ours)),
                "model": dict(data_preprocessor=dict(mean=(123.675, 116.28, 103.53)))}  # a tuple: the same value
    assert rows_of(zoo, rendered) == [
        ("optim_wrapper.optimizer.type", "AdamW", "SGD"),
        ("optim_wrapper.optimizer.lr", 6e-5, 0.08),
        ("optim_wrapper.optimizer.betas", (0.9, 0.999), ABSENT),
        ("optim_wrapper.optimizer.momentum", ABSENT, 0.9),
        # a subtree one side lacks is one row; clip_grad=None is what a missing clip_grad means
        ("optim_wrapper.paramwise_cfg", dict(custom_keys=dict(head=dict(lr_mult=10.0))), ABSENT),
        ("train_dataloader.batch_size", 1, 16),
        ("train_dataloader.dataset.pipeline[RandomCrop].crop_size", (1024, 1024), [512, 512]),
        ("train_dataloader.dataset.pipeline[Resize#2].scale", (1024, 512), (512, 256)),
        ("train_dataloader.dataset.pipeline[PackSegInputs]", ABSENT, dict(type="PackSegInputs")),
    ]
    # a list that is not a pipeline is one value: its items are not compared one by one
    assert rows_of({"model": dict(in_index=[0, 1, 2, 3])}, {"model": dict(in_index=[0, 1, 2])}) == [
        ("model.in_index", [0, 1, 2, 3], [0, 1, 2])]


def test_bookkeeping_is_not_a_departure() -> None:
    config = {
        "train_dataloader": dict(batch_size=2, num_workers=4, persistent_workers=True,
                                 sampler=dict(_scope_="mmseg", type="InfiniteSampler")),
        "model": dict(_scope_="mmseg", type="EncoderDecoder", prove_family="cnn"),
        "default_hooks": dict(logger=dict(interval=50)), "randomness": dict(seed=0), "work_dir": "/x",
        "crop_size": (512, 512), "max_iters": 80000, "prove_family": "cnn", "env_cfg": {}, "visualizer": {},
    }
    assert recipe(config) == {"train_dataloader": dict(batch_size=2, sampler=dict(type="InfiniteSampler")),
                              "model": dict(type="EncoderDecoder")}


def norms(norm: str, sync_bn: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"model": dict(backbone=dict(norm_cfg=dict(type=norm, requires_grad=True)),
                                            decode_head=dict(norm_cfg=dict(type=norm)))}
    if sync_bn is not None:
        config["sync_bn"] = sync_bn
    return config


def test_normalisation_as_it_takes_effect() -> None:
    zoo = norms("SyncBN")
    # one process: mmengine reverts SyncBN to BN, so the zoo's SyncBN and our BN are one layer
    assert rows_of(effective(zoo, 1), effective(norms("BN"), 1)) == []
    assert rows_of(effective(zoo, 1), effective(norms("BN", "torch"), 1)) == []
    # several: BN + sync_bn='torch' is the zoo's SyncBN; BN alone is not
    assert rows_of(effective(zoo, 2), effective(norms("BN", "torch"), 2)) == []
    assert rows_of(effective(zoo, 2), effective(norms("BN"), 2)) == [
        ("model.backbone.norm_cfg.type", "SyncBN", "BN"), ("model.decode_head.norm_cfg.type", "SyncBN", "BN")]


# --- attribution, on a hand-made template set ------------------------------------------------------------

ZOO = """
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', size=(512, 1024)),
    backbone=dict(type='ResNetV1c', depth=50, norm_cfg=norm_cfg,
                  init_cfg=dict(type='Pretrained', checkpoint='https://example.org/r50-0123abcd.pth')),
    decode_head=dict(type='FCNHead', num_classes=19, norm_cfg=norm_cfg),
)
train_dataloader = dict(
    batch_size=2, num_workers=4, persistent_workers=True,
    dataset=dict(type='CityscapesDataset', data_root='data/cityscapes/', pipeline=[
        dict(type='LoadImageFromFile'), dict(type='RandomCrop', crop_size=(512, 1024), cat_max_ratio=0.75)]))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=6e-05, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(logger=dict(type='LoggerHook', interval=50))
"""

MODEL = """
_base_ = ['{zoo}']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(num_classes=7, norm_cfg=norm_cfg), backbone=dict(norm_cfg=norm_cfg))
"""

# The run layer as the shipped template writes it (variant numbers, the sweep's settings, fixed text);
# sync_bn as the lead's run layer renders it.
RUN = """
_base_ = [$model_config]
model = dict(data_preprocessor=dict(size=$crop_size))
train_dataloader = dict(
    batch_size=$batch_size, num_workers=$num_workers,
    dataset=dict(data_root=$dataset_root, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='RandomCrop', crop_size=$crop_size, cat_max_ratio=0.75)]))
optim_wrapper = dict(optimizer=dict(_delete_=True, type='SGD', lr=$lr, momentum=0.9, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=$max_iters, by_epoch=False)]
train_cfg = dict(max_iters=$max_iters, val_interval=$val_interval)
default_hooks = dict(logger=dict(interval=$log_interval))
randomness = dict(seed=$seed)
sync_bn = 'torch' if $world_size > 1 else None
"""

# Everything the zoo says, but the dataset root (the lead's model-zoo variant, in miniature)
RUN_AS_THE_ZOO = """
_base_ = [$model_config]
train_dataloader = dict(dataset=dict(data_root=$dataset_root))
default_hooks = dict(logger=dict(interval=$log_interval))
randomness = dict(seed=$seed)
"""


def hand_made(tmp_path: Path, templates: Path, run_template: str = RUN, model: str = MODEL,
              gpus: int = 0) -> Path:
    (tmp_path / "zoo_fcn.py").write_text(ZOO)
    (templates / "models" / "tiny_fcn.py").write_text(model.format(zoo=tmp_path / "zoo_fcn.py"))
    (templates / "run_config.py.tmpl").write_text(run_template)
    (templates / "variants" / "TINY.toml").write_text(
        "max_iters = 1000\nbatch_size = 8\nlr = 0.02\nwarmup_iters = 0\nval_interval = 100\n"
        "checkpoint_interval = 100\n")
    return write_sweep(tmp_path, f"""
name = "tiny"
dataset = "cityscapes"
method = "baseline"
data_root = "{tmp_path / 'runs'}"
dataset_root = "{tmp_path / 'cityscapes'}"
templates = "{templates}"
crop_size = [256, 256]
models = ["tiny_fcn"]
variants = ["TINY"]
[resources]
gpus_per_node = {gpus}
""")


def departures_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["departures", *argv, "--json"]) == 0
    out: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return out


def by_key(listing: dict[str, Any]) -> dict[str, tuple[str | None, str | None, str]]:
    return {row["key"]: (row["zoo"], row["rendered"], row["layer"]) for row in listing["departures"]}


@needs_mmengine
def test_each_departure_is_given_to_the_layer_that_made_it(tmp_path: Path, templates_copy: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sweep = hand_made(tmp_path, templates_copy)
    [listing] = departures_json([str(sweep)], capsys)
    assert listing["run"] == "TINY/tiny_fcn" and listing["zoo_config"] == str(tmp_path / "zoo_fcn.py")
    assert by_key(listing) == {
        "model.data_preprocessor.size": ("(512, 1024)", "(256, 256)", "variant"),
        "model.decode_head.num_classes": ("19", "7", "model template"),
        "train_dataloader.batch_size": ("2", "8", "variant"),
        "train_dataloader.dataset.data_root": ("'data/cityscapes/'", repr(str(tmp_path / "cityscapes")), "sweep"),
        "train_dataloader.dataset.pipeline[RandomCrop].crop_size": ("(512, 1024)", "(256, 256)", "variant"),
        "optim_wrapper.optimizer.type": ("'AdamW'", "'SGD'", "run template"),
        "optim_wrapper.optimizer.lr": ("6e-05", "0.02", "variant"),
        "optim_wrapper.optimizer.momentum": (None, "0.9", "run template"),
        "param_scheduler[PolyLR].power": ("1.0", "0.9", "run template"),
        "param_scheduler[PolyLR].end": ("80000", "1000", "variant"),
        "train_cfg.max_iters": ("80000", "1000", "variant"),
        "train_cfg.val_interval": ("8000", "100", "variant"),
    }  # not num_workers, the logger's interval, the seed, nor SyncBN -> BN at one process


@needs_mmengine
def test_plain_bn_on_several_gpus_departs_and_sync_bn_torch_does_not(tmp_path: Path, templates_copy: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sweep = hand_made(tmp_path, templates_copy, gpus=2)
    rows = by_key(departures_json([str(sweep)], capsys)[0])
    assert not any("norm" in key for key in rows) and "sync_bn" not in rows
    assert rows["train_dataloader.batch_size"] == ("2", "4", "variant")  # 8 in all, 4 a process: still the variant's

    sweep = hand_made(tmp_path, templates_copy, RUN.replace("sync_bn =", "unused ="), gpus=2)
    rows = by_key(departures_json([str(sweep)], capsys)[0])
    assert rows["model.backbone.norm_cfg.type"] == ("'SyncBN'", "'BN'", "model template")
    assert rows["model.decode_head.norm_cfg.type"] == ("'SyncBN'", "'BN'", "model template")


@needs_mmengine
def test_a_run_as_the_zoo_but_its_data_lists_only_the_data_root(tmp_path: Path, templates_copy: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    sweep = hand_made(tmp_path, templates_copy, RUN_AS_THE_ZOO, model="_base_ = ['{zoo}']\n")
    assert main(["departures", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert f"TINY/tiny_fcn vs {tmp_path / 'zoo_fcn.py'}" in out
    body = [line for line in out.splitlines() if "cityscapes" in line and "Key" not in line]
    assert len(body) == 1 and "train_dataloader.dataset.data_root" in body[0] and "sweep" in body[0], out
    assert len([line for line in out.splitlines() if line.strip()]) == 4, out  # title, header, rule, the row

    sweep = hand_made(tmp_path, templates_copy, RUN_AS_THE_ZOO.replace("$dataset_root", "'data/cityscapes/'"),
                      model="_base_ = ['{zoo}']\n")
    assert main(["departures", str(sweep)]) == 0
    assert capsys.readouterr().out == f"TINY/tiny_fcn: no departure from {tmp_path / 'zoo_fcn.py'}\n"


@needs_mmengine
def test_a_template_without_a_base_and_a_missing_training_stack_are_one_line(
        tmp_path: Path, templates_copy: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sweep = hand_made(tmp_path, templates_copy, model="model = dict(type='EncoderDecoder')\n")
    assert main(["departures", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "tiny_fcn.py: _base_" in err, err

    monkeypatch.setitem(sys.modules, "mmengine.config", None)  # as on a login node without the train extra
    assert main(["departures", str(SWEEPS / "demo.toml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pip install 'prove-jobs[train]'" in err, err


# --- the shipped sweep, mmseg's own configs ---------------------------------------------------------------

needs_mmseg = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mmseg") is None, reason="the model zoo's configs come with mmsegmentation"
)


@needs_mmseg
def test_segformer_on_the_unified_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWARE_DATA_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("CITYSCAPES_ROOT", str(tmp_path / "cityscapes"))
    argv = [str(SWEEPS / "cityscapes.toml"), "--model", "segformer_mit-b3", "--variant", "WEIGHTS_CITYSCAPES"]
    [listing] = departures_json(argv, capsys)
    assert listing["zoo_config"] == "mmseg::segformer/segformer_mit-b3_8xb1-160k_cityscapes-1024x1024.py"
    rows = by_key(listing)
    assert rows["optim_wrapper.optimizer.type"] == ("'AdamW'", "'SGD'", "run template")
    assert rows["optim_wrapper.paramwise_cfg"][1:] == (None, "run template")
    assert rows["param_scheduler[PolyLR].power"] == ("1.0", "0.9", "run template")
    assert rows["param_scheduler[PolyLR].end"] == ("160000", "20000", "variant")
    assert rows["train_dataloader.batch_size"] == ("1", "16", "variant")
    assert rows["train_dataloader.dataset.pipeline[RandomCrop].crop_size"] == ("(1024, 1024)", "(512, 512)", "variant")
    assert rows["train_cfg.max_iters"] == ("160000", "20000", "variant")
    assert rows["train_dataloader.dataset.data_root"] == ("'data/cityscapes/'", repr(str(tmp_path / "cityscapes")),
                                                          "sweep")
    assert not any("norm_cfg" in key or "num_workers" in key or "_scope_" in key for key in rows)

    assert main(["departures", *argv]) == 0  # the table: every row, one line each in a pipe's width
    out = capsys.readouterr().out
    assert out.startswith("WEIGHTS_CITYSCAPES/segformer_mit-b3 vs mmseg::segformer/")
    for key, (_zoo, rendered, layer) in rows.items():
        [line] = [line for line in out.splitlines() if line.split()[:1] == [key]]
        assert line.split()[-1] == layer.split()[-1], line
        if len(rendered or "") < 20:
            assert (rendered or "absent") in line, line


@needs_mmseg
def test_the_table_fits_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWARE_DATA_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["departures", str(SWEEPS / "cityscapes.toml"), "--model", "segnext_mscan-b",
                 "--variant", "WEIGHTS_CITYSCAPES"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80, out
    assert "optim_wrapper.optimizer." in out and "run template" in out


@needs_mmseg
def test_the_model_zoo_variant_departs_only_in_data_and_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """MMSEG_ZOO at the zoo's own GPU layout (PSPNet 4 x 2) trains mmseg's config: nothing departs but where the
    data is and where the checkpoint is read from (the weight cache, not the URL)."""
    monkeypatch.setenv("AWARE_DATA_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("CITYSCAPES_ROOT", str(tmp_path / "cityscapes"))
    argv = [str(SWEEPS / "cityscapes-zoo.toml"), "--model", "pspnet_r50", "--variant", "MMSEG_ZOO"]
    [listing] = departures_json(argv, capsys)
    rows = by_key(listing)
    data = {f"{loader}_dataloader.dataset.data_root" for loader in ("train", "val", "test")}
    assert set(rows) - data <= {"model.pretrained"}, rows
    assert {rows[key][2] for key in data} == {"sweep"}
    if "model.pretrained" in rows:  # the cache file the weight cache keeps it under
        assert rows["model.pretrained"][0] == "'open-mmlab://resnet50_v1c'"
        assert rows["model.pretrained"][1].endswith("resnet50_v1c-2cccc1ad.pth'")
    # SegFormer on the same sweep: the sweep's one evaluation protocol is the sweep's departure
    segformer = by_key(departures_json([argv[0], "--model", "segformer_mit-b3", "--variant", "MMSEG_ZOO"], capsys)[0])
    assert segformer["model.test_cfg.mode"] == ("'slide'", "'whole'", "sweep")
    assert "optim_wrapper.optimizer.type" not in segformer and "train_cfg.max_iters" not in segformer
