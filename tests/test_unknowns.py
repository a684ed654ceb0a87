"""Issue 21, items 3 and 4: what prove-jobs could not read is ``?`` (null in JSON) with a note, never 0; a run
is named by its folder, the same in every view.

The runs are hand-started work dirs as mmengine (or mmcv, for mmseg 0.x) leaves them: a ``<ts>/`` folder with
``vis_data/scalars.json``, and the config the Runner dumped at the top of the work dir (``config.py`` when
it was started from a file of that name), or none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from prove_jobs.cli import main
from prove_jobs.report.trained import read_trained_config

ITERS = 1000
PSPNET = "pspnet_r50-d8_4xb2-40k_cityscapes-512x1024"

ITER_CONFIG_NO_RECIPE = f"train_cfg = dict(type='IterBasedTrainLoop', max_iters={ITERS}, val_interval=500)\n"
EPOCH_CONFIG = """
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
train_dataloader = dict(batch_size=2, dataset=dict(type='ADE20KDataset'))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=6e-05, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', start_factor=1e-06, by_epoch=False, begin=0, end=1500),
                   dict(type='PolyLR', power=1.0, begin=1500, end=160000, eta_min=0.0, by_epoch=False)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2))
"""
# mmseg 0.x's configs/_base_/schedules/schedule_80k.py and a dataset base, as `Config.dump` flattens them
LEGACY_CONFIG = """
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(type='EncoderDecoder', pretrained='open-mmlab://resnet50_v1c',
             backbone=dict(type='ResNetV1c', depth=50, norm_cfg=dict(type='SyncBN', requires_grad=True)),
             train_cfg=dict(), test_cfg=dict(mode='whole'))
crop_size = (512, 1024)
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomCrop', crop_size=(512, 1024), cat_max_ratio=0.75)]
data = dict(samples_per_gpu=2, workers_per_gpu=2,
            train=dict(type='CityscapesDataset', pipeline=[dict(type='LoadImageFromFile'),
                                                           dict(type='RandomCrop', crop_size=(512, 1024))]))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optimizer_config = dict()
lr_config = dict(policy='poly', power=0.9, min_lr=0.0001, by_epoch=False)
runner = dict(type='IterBasedRunner', max_iters=80000)
checkpoint_config = dict(by_epoch=False, interval=8000)
evaluation = dict(interval=8000, metric='mIoU', pre_eval=True)
gpu_ids = range(0, 4)
"""


def hand_run(work: Path, config: str | None, *, config_name: str = "config.py", iters: int = ITERS) -> Path:
    """A work dir mmengine trained by hand: one start, a train record every 100 iterations, a val every 500."""
    vis = work / "20260101_000000" / "vis_data"
    vis.mkdir(parents=True)
    lines = []
    for it in range(100, iters + 1, 100):
        lines.append({"lr": 0.01, "data_time": 0.01, "loss": 1.0, "time": 0.5, "iter": it, "memory": 3000, "step": it})
        if it % 500 == 0:
            lines.append({"aAcc": 90.0, "mIoU": 40.0 + it / 100, "mAcc": 50.0, "data_time": 0.01, "time": 0.2,
                          "step": it})
    (vis / "scalars.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if config is not None:
        (work / config_name).write_text(config)
    return work


def out_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def report_json(root: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(out_of(["report", "--root", str(root), "--format", "json"], capsys))


def zeros(markdown: str) -> list[str]:
    """The table rows and headers of ``markdown`` that show a 0 for a value (``| 0 |``, ``BS=0``, ``0k``)."""
    return [line for line in markdown.splitlines()
            if re.search(r"\| 0(\.0)? \||BS=0\b|\(0k|\b0 iters", line)]


# --- 3. unknown stays unknown ---------------------------------------------------------------------------------


def test_a_run_without_a_readable_recipe_shows_question_marks_and_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hand_run(tmp_path / "hand" / "no_config", None)  # a work dir whose config was deleted
    hand_run(tmp_path / "work_dirs" / PSPNET, ITER_CONFIG_NO_RECIPE)  # its schedule, nothing else
    document = report_json(tmp_path, capsys)
    configurations = document["configurations"]
    assert set(configurations) == {"hand", "work_dirs"}
    for row in ("Batch size", "Total samples", "Base LR", "Crop size", "Optimizer", "Warmup", "LR scheduler"):
        assert configurations["hand"][row] is None and configurations["work_dirs"][row] is None, row
    assert configurations["hand"]["Iterations"] is None  # no config, and its logs give no max_iters
    assert configurations["work_dirs"]["Iterations"] == "1,000"
    assert configurations["work_dirs"]["Val interval"] == "500"
    notes = document["configuration_notes"]
    assert any(note.startswith("hand (no_config): recipe: no config file in its work dir") for note in notes), notes
    assert f"work_dirs ({PSPNET}): batch size: no train_dataloader.batch_size in config.py" in notes
    assert f"work_dirs ({PSPNET}): lr: no optim_wrapper.optimizer.lr in config.py" in notes

    markdown = out_of(["report", "--root", str(tmp_path)], capsys)
    assert zeros(markdown) == []
    assert "| **Batch size** | ? | ? |" in markdown and "| **Base LR** | ? | ? |" in markdown
    assert "work_dirs (1k, BS=?)" in markdown and "hand (? iterations, BS=?)" in markdown
    assert "batch size: no train_dataloader.batch_size in config.py" in markdown


def test_an_epoch_loop_is_shown_in_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hand_run(tmp_path / "work_dirs" / "segformer_mit-b0_8xb2-12e_ade20k", EPOCH_CONFIG)
    document = report_json(tmp_path, capsys)
    column = document["configurations"]["work_dirs"]
    assert column["Iterations"] == "12 epochs"
    assert column["Val interval"] == "every 1 epoch" and column["Checkpoint interval"] == "every 2 epochs"
    assert column["Total samples"] is None and column["Gradient steps"] is None  # an epoch's iterations unknown
    assert column["Batch size"] == "2 per GPU" and column["Base LR"] == "6e-05" and column["Warmup"] == "1,500"
    markdown = out_of(["report", "--root", str(tmp_path)], capsys)
    assert "work_dirs (12 epochs, BS=2 per GPU)" in markdown and zeros(markdown) == []


def test_a_checkpoint_interval_counts_in_the_unit_its_hook_says(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """mmengine's CheckpointHook counts epochs unless it says ``by_epoch=False``, whatever the loop: an epoch
    loop that saves every 1,000 iterations is not "every 1,000 epochs"; a hook that does not say counts epochs."""
    per_iter = EPOCH_CONFIG.replace("interval=2)", "interval=1000, by_epoch=False)")
    hand_run(tmp_path / "epochs" / "segformer_mit-b0_8xb2-12e_ade20k", per_iter)
    iter_default = ITER_CONFIG_NO_RECIPE + "default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))\n"
    hand_run(tmp_path / "iters" / PSPNET, iter_default)
    configurations = report_json(tmp_path, capsys)["configurations"]
    assert configurations["epochs"]["Checkpoint interval"] == "every 1,000 iterations"
    assert configurations["epochs"]["Val interval"] == "every 1 epoch"  # the loop's unit
    assert configurations["iters"]["Checkpoint interval"] == "every 1 epoch"
    assert configurations["iters"]["Val interval"] == "500"


def test_an_mmseg_0x_config_is_read(tmp_path: Path) -> None:
    work = tmp_path / "work_dirs" / PSPNET  # as mmseg 0.x's tools/train.py left it
    work.mkdir(parents=True)
    (work / f"{PSPNET}.py").write_text(LEGACY_CONFIG)
    (work / "20220101_000000.log").write_text("2022-01-01 00:00:00,000 - mmseg - INFO - Iter [50/80000]\tlr: 1e-2\n")
    (work / "20220101_000000.log.json").write_text('{"env_info": "", "seed": 0}\n')
    (work / "latest.pth").write_bytes(b"")
    config = read_trained_config(work)
    assert config is not None
    assert (config.max_iters, config.batch_size, config.batch_is_per_gpu) == (80000, 2, True)
    assert (config.optimizer, config.lr, config.scheduler, config.warmup) == ("SGD", 0.01, "Poly", 0)
    assert (config.val_interval, config.checkpoint_interval, config.crop_size) == (8000, 8000, (512, 1024))
    assert config.init == "resnet50_v1c" and config.evaluation == "whole image" and config.missing == ()
    (work / f"{PSPNET}.py").write_text(LEGACY_CONFIG.replace("runner = dict(type='IterBasedRunner', max_iters=80000)",
                                                             "total_iters = 40000"))
    assert read_trained_config(work).max_iters == 40000  # type: ignore[union-attr]  # mmseg before 0.13
    (work / f"{PSPNET}.py").write_text(LEGACY_CONFIG.replace("runner = dict(type='IterBasedRunner', max_iters=80000)",
                                                             "runner = dict(type='EpochBasedRunner', max_epochs=50)"))
    epochs = read_trained_config(work)
    assert epochs is not None and (epochs.max_iters, epochs.max_epochs, epochs.by_epoch) == (None, 50, True)


# --- 4. run names -----------------------------------------------------------------------------------------


def test_a_work_dir_is_named_by_its_folder_in_every_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It held `config.py` (mmengine's dump of a config of that name) and was named `config`; `status RUN_DIR`
    named it by the folders four levels up."""
    work = hand_run(tmp_path / "alice" / "mmseg" / "work_dirs" / PSPNET, ITER_CONFIG_NO_RECIPE)
    expected = ("work_dirs", PSPNET)
    for argv in (["status", str(work), "--json"], ["status", "--root", str(tmp_path), "--json"],
                 ["status", "--root", str(tmp_path / "alice" / "mmseg"), "--json"]):
        [row] = json.loads(out_of(argv, capsys))
        assert (row["variant"], row["model"]) == expected, argv
    document = report_json(tmp_path, capsys)
    assert [(r["variant"], r["model"]) for r in document["runs"]] == [expected]
    assert [r["model"] for r in document["results"]] == [PSPNET]
    curve = out_of(["status", str(work), "--curve"], capsys)
    assert f"work_dirs/{PSPNET}" in curve and "config" not in curve
    table = out_of(["status", "--root", str(tmp_path)], capsys)
    assert PSPNET in table and " config " not in table


# --- 5. a recipe is parsed once, and again when its file changes ---------------------------------------------


def test_a_recipe_is_read_again_only_when_its_config_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from prove_jobs.report import trained

    parsed: list[int] = []
    parse = trained.module_values
    monkeypatch.setattr(trained, "module_values", lambda source: parsed.append(1) or parse(source))
    work = hand_run(tmp_path / "work_dirs" / PSPNET, EPOCH_CONFIG)
    hand_run(tmp_path / "work_dirs" / "no_config", None)
    assert report_json(tmp_path, capsys)["configurations"]["work_dirs"]["Base LR"] == "6e-05" and len(parsed) == 1
    document = report_json(tmp_path, capsys)
    assert len(parsed) == 1 and document["configurations"]["work_dirs"]["Base LR"] == "6e-05"  # from the cache
    assert any("no_config" in note and "no config file" in note for note in document["configuration_notes"])
    config = work / "config.py"
    config.write_text(EPOCH_CONFIG.replace("lr=6e-05", "lr=7e-05"))  # same size, same second
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 1))
    assert report_json(tmp_path, capsys)["configurations"]["work_dirs"]["Base LR"] == "7e-05" and len(parsed) == 2


def test_a_warm_report_reads_an_appended_log_and_an_edited_config_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What a warm report keeps (recipes, run summaries, the rows made from them) follows the
    files: a log written on after the last report, then a config edited, each shows in the next one."""
    import os

    work = hand_run(tmp_path / "work_dirs" / PSPNET, ITER_CONFIG_NO_RECIPE, iters=500)  # 500 of 1,000 so far
    for _ in range(2):  # cold, then warm: the same
        document = report_json(tmp_path, capsys)
        [run] = document["runs"]
        assert (run["iter"], run["last_miou"], document["times"]) == (500, 45.0, [])
        assert document["configurations"]["work_dirs"]["Val interval"] == "500"
    scalars = work / "20260101_000000" / "vis_data" / "scalars.json"
    with scalars.open("a") as fh:  # it trained on to the end
        for it in range(600, 1001, 100):
            fh.write(json.dumps({"lr": 0.01, "data_time": 0.01, "loss": 1.0, "time": 0.5, "iter": it, "memory": 3000,
                                 "step": it}) + "\n")
        fh.write(json.dumps({"aAcc": 90.0, "mIoU": 50.0, "mAcc": 50.0, "data_time": 0.01, "time": 0.2,
                             "step": 1000}) + "\n")
    document = report_json(tmp_path, capsys)
    [run] = document["runs"]
    assert (run["iter"], run["last_miou"], run["best_miou"], run["best_iter"]) == (1000, 50.0, 50.0, 1000)
    assert [point[0] for point in run["curve"]] == [500, 1000]
    config = work / "config.py"
    before = config.stat()
    config.write_text(ITER_CONFIG_NO_RECIPE.replace("val_interval=500", "val_interval=250"))  # same size
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert report_json(tmp_path, capsys)["configurations"]["work_dirs"]["Val interval"] == "250"
