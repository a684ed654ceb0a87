"""The log formats prove-jobs reads (issue 21, item 1), on small synthetic logs in the exact shapes
mmcv 1.x (mmseg 0.x) and mmengine write, through the CLI: ``status DIR --json`` and ``status --root``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prove_jobs.cli import main
from prove_jobs.logs import read_run_log, read_text_log

TS = "20210803_120000"
STAMP = "2021-08-03 12:{m:02d}:{s:02d},123 - mmseg - INFO - "


def _status(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["status", *args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    return rows


def _one(capsys: pytest.CaptureFixture[str], run_dir: Path) -> dict[str, object]:
    [row] = _status(capsys, str(run_dir))
    return row


# --- mmseg 0.x (mmcv 1.x's TextLoggerHook) ---------------------------------------------------------

CONFIG_0X = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    decode_head=dict(type='FCNHead', in_channels=2048, num_classes=19))
log_config = dict(
    interval=50, hooks=[dict(type='TextLoggerHook', by_epoch=False)])
runner = dict(type='IterBasedRunner', max_iters=200)
checkpoint_config = dict(by_epoch=False, interval=100)
evaluation = dict(interval=100, metric='mIoU', pre_eval=True)
work_dir = './work_dirs/fcn'
gpu_ids = range(0, 1)
"""

TABLE_0X = """per class results:
{stamp}
+---------------+-------+-------+
|     Class     |  IoU  |  Acc  |
+---------------+-------+-------+
|      road     | 97.02 | 98.65 |
|    sidewalk   | 78.11 | 88.42 |
+---------------+-------+-------+
{stamp}Summary:
{stamp}
+-------+-------+-------+
|  aAcc |  mIoU |  mAcc |
+-------+-------+-------+
| {a:.2f} | {m:.2f} | {c:.2f} |
+-------+-------+-------+
"""


def _stamp(k: int) -> str:
    return STAMP.format(m=k // 60 % 60, s=k % 60)


def _train0(it: int, total: int, k: int, loss: float = 1.2345, memory: int = 3512) -> str:
    return (f"{_stamp(k)}Iter [{it}/{total}]\tlr: 9.997e-03, eta: 0:01:00, time: 0.512, data_time: 0.012, "
            f"memory: {memory}, decode.loss_seg: {loss:.4f}, decode.acc_seg: 50.0000, loss: {loss:.4f}\n")


def _val0(shown: int, k: int, a: float, m: float, c: float) -> str:
    return (f"{_stamp(k)}" + TABLE_0X.format(stamp=_stamp(k), a=a * 100, m=m * 100, c=c * 100)
            + f"{_stamp(k)}Exp name: fcn_r50-d8_512x1024_40k_cityscapes.py\n"
            + f"{_stamp(k)}Iter(val) [{shown}]\taAcc: {a:.4f}, mIoU: {m:.4f}, mAcc: {c:.4f}, "
              "IoU.road: 0.9702, IoU.sidewalk: 0.7811, Acc.road: 0.9865, Acc.sidewalk: 0.8842\n")


def _head0(k: int = 0, config: str = CONFIG_0X) -> str:
    return (f"{_stamp(k)}Environment info:\n------------------------------------------------------------\n"
            "sys.platform: linux\nPython: 3.8.13\n------------------------------------------------------------\n\n"
            f"{_stamp(k)}Distributed training: False\n{_stamp(k)}Config:\n{config}\n")


def _json_train0(it: int, loss: float = 1.2345, epoch: int = 1, memory: int | None = 3512) -> str:
    mem = {"memory": memory} if memory is not None else {}
    return json.dumps({"mode": "train", "epoch": epoch, "iter": it, "lr": 0.009997, **mem, "data_time": 0.012,
                       "decode.loss_seg": loss, "decode.acc_seg": 50.0, "loss": loss, "time": 0.512}) + "\n"


def _json_val0(shown: int, a: float, m: float, c: float, epoch: int = 1) -> str:
    return json.dumps({"mode": "val", "epoch": epoch, "iter": shown, "lr": 0.009997, "aAcc": a, "mIoU": m,
                       "mAcc": c, "IoU.road": 0.9702, "Acc.road": 0.9865}) + "\n"


def _json_meta0(config: str = CONFIG_0X) -> str:
    return json.dumps({"env_info": "sys.platform: linux\nPython: 3.8.13", "config": config, "seed": 0,
                       "exp_name": "fcn.py", "mmseg_version": "0.30.0+abc1234"}) + "\n"


def _work_dir_0x(root: Path, text: str | None, js: str | None, *, latest: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (root / f"{TS}.log").write_text(text)
    if js is not None:
        (root / f"{TS}.log.json").write_text(js)
    if latest:
        (root / "iter_200.pth").write_bytes(b"weights")
        os.symlink("iter_200.pth", root / "latest.pth")
    return root


def test_mmseg0x_work_dir_is_found_and_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # mmcv >= 1.3.12: the train record of the val's iteration is written, then the val, whose `iter` is the
    # val loader's length (500)
    text = (_head0() + _train0(50, 200, 10) + _train0(100, 200, 20) + _val0(500, 30, 0.9298, 0.5778, 0.6612)
            + _train0(150, 200, 40) + _train0(200, 200, 50, loss=0.9) + _val0(500, 60, 0.9301, 0.6010, 0.6700))
    js = (_json_meta0() + _json_train0(50) + _json_train0(100) + _json_val0(500, 0.9298, 0.5778, 0.6612)
          + _json_train0(150) + _json_train0(200, loss=0.9) + _json_val0(500, 0.9301, 0.6010, 0.6700))
    run = _work_dir_0x(tmp_path / "work_dirs" / "fcn", text, js)
    row = _one(capsys, run)
    assert row["state"] == "completed"
    assert (row["iter"], row["max_iters"]) == (200, 200)
    assert row["curve"] == [[100, 57.78, 92.98], [200, 60.1, 93.01]]
    assert (row["best_miou"], row["best_iter"]) == (60.1, 200)
    assert row["loss"] == 0.9 and row["memory_mb"] == 3512 and row["metric"] == "mIoU"
    [found] = _status(capsys, "--root", str(tmp_path))
    assert found["run_dir"] == str(run) and found["curve"] == row["curve"]


def test_mmseg0x_text_log_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (_head0() + _train0(50, 200, 10) + _train0(100, 200, 20) + _val0(500, 30, 0.9298, 0.5778, 0.6612)
            + _train0(150, 200, 40))
    run = _work_dir_0x(tmp_path / "fcn", text, None, latest=False)
    row = _one(capsys, run)
    assert (row["iter"], row["max_iters"]) == (150, 200)
    assert row["curve"] == [[100, 57.78, 92.98]]
    assert row["sec_per_iter"] == 0.512 and row["lr"] == 0.009997


def test_mmseg0x_val_after_a_dropped_train_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # mmcv 1.3.4 to 1.3.11: the log buffer is cleared before the val, so the train record of the val's own
    # iteration is never written; the val's `iter` is the val loader length (500), its iteration the next
    # multiple of the eval interval after the train record before it
    js = (_json_meta0() + _json_train0(50) + _json_val0(500, 0.9298, 0.5778, 0.6612)
          + _json_train0(150) + _json_val0(500, 0.9301, 0.6010, 0.6700))
    run = _work_dir_0x(tmp_path / "fcn", None, js)
    row = _one(capsys, run)
    assert [p[0] for p in row["curve"]] == [100, 200]  # type: ignore[attr-defined]
    assert (row["iter"], row["max_iters"], row["state"]) == (200, 200, "completed")


def test_mmseg0x_val_iteration_without_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the same without an eval interval to read: a val between records two log intervals apart is at the
    # middle one; the last val follows the earlier ones' pace
    js = (_json_train0(50) + _json_train0(100) + _json_train0(150) + _json_val0(500, 0.9, 0.5, 0.6)
          + _json_train0(250) + _json_train0(300) + _json_train0(350) + _json_val0(500, 0.9, 0.55, 0.6))
    run = _work_dir_0x(tmp_path / "fcn", None, js)
    row = _one(capsys, run)
    assert [p[0] for p in row["curve"]] == [200, 400]  # type: ignore[attr-defined]
    assert row["max_iters"] is None


def test_mmseg0x_older_val_line_gives_the_iteration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # mmcv before 1.3.4: `Iter(val) [200]` is the training iteration (its train record was cleared)
    text = (_head0() + _train0(50, 400, 10) + _train0(100, 400, 20) + _train0(150, 400, 30)
            + _val0(200, 40, 0.9, 0.5, 0.6) + _train0(250, 400, 50) + _train0(300, 400, 60)
            + _train0(350, 400, 70) + _val0(400, 80, 0.91, 0.52, 0.61))
    js = (_json_train0(50) + _json_train0(100) + _json_train0(150) + _json_val0(200, 0.9, 0.5, 0.6)
          + _json_train0(250) + _json_train0(300) + _json_train0(350) + _json_val0(400, 0.91, 0.52, 0.61))
    run = _work_dir_0x(tmp_path / "a", text, js)
    row = _one(capsys, run)
    assert [p[0] for p in row["curve"]] == [200, 400]  # type: ignore[attr-defined]
    assert (row["iter"], row["state"]) == (400, "completed")
    (run / f"{TS}.log.json").unlink()  # the text alone says the same
    assert [p[0] for p in _one(capsys, run)["curve"]] == [200, 400]  # type: ignore[attr-defined]


def test_mmseg0x_epoch_based_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = CONFIG_0X.replace("runner = dict(type='IterBasedRunner', max_iters=200)",
                               "runner = dict(type='EpochBasedRunner', max_epochs=2)")
    text = _head0(config=config)
    k = 1
    for epoch in (1, 2):
        for inner in (50, 100):
            text += (f"{_stamp(k)}Epoch [{epoch}][{inner}/120]\tlr: 1.000e-02, eta: 0:01:00, time: 0.300, "
                     "data_time: 0.010, memory: 2000, loss: 0.5000\n")
            k += 1
        text += f"{_stamp(k)}Saving checkpoint at {epoch} epochs\n"
        text += f"{_stamp(k)}Epoch(val) [{epoch}][20]\taAcc: 0.9000, mIoU: 0.{5 + epoch}000, mAcc: 0.7000\n"
    run = _work_dir_0x(tmp_path / "e", text, None, latest=False)
    row = _one(capsys, run)
    assert row["curve"] == [[120, 60.0, 90.0], [240, 70.0, 90.0]]
    assert (row["iter"], row["max_iters"], row["state"]) == (240, 240, "completed")
    assert (row["by_epoch"], row["epoch"], row["max_epochs"]) == (True, 2, 2)


# --- mmengine's EpochBasedTrainLoop ------------------------------------------------------------------

ENGINE_STAMP = "2024/01/02 10:{m:02d}:{s:02d} - mmengine - INFO - "
CONFIG_ENGINE = """train_cfg = dict(max_epochs=3, type='EpochBasedTrainLoop', val_interval=1)
val_cfg = dict(type='ValLoop')
default_hooks = dict(logger=dict(interval=50, type='LoggerHook'))
"""


def _engine_epoch_run(root: Path, *, metric: str = "mIoU", json_memory: bool = True,
                      extra_val: dict[str, float] | None = None) -> Path:
    name = "20240102_100000"
    start = root / name
    (start / "vis_data").mkdir(parents=True)
    stamp = lambda k: ENGINE_STAMP.format(m=k // 60, s=k % 60)  # noqa: E731
    text = f"{stamp(0)}\n------------------------------------------------------------\nSystem environment:\n" \
           f"    sys.platform: linux\n\n{stamp(0)}Config:\n{CONFIG_ENGINE}\n"
    js = ""
    k = 1
    for epoch in (1, 2, 3):
        for inner in (50, 100):
            it = (epoch - 1) * 120 + inner
            text += (f"{stamp(k)}Epoch(train) [{epoch}][{inner:3d}/120]  lr: 1.0000e-02  eta: 0:00:10  "
                     f"time: 0.3000  data_time: 0.0100  memory: 2100  loss: 0.{epoch}000\n")
            rec: dict[str, object] = {"lr": 0.01, "data_time": 0.01, "loss": epoch / 10, "time": 0.3,
                                      "epoch": epoch, "iter": it}
            if json_memory:
                rec["memory"] = 2100
            js += json.dumps({**rec, "step": it}) + "\n"
            k += 1
        text += f"{stamp(k)}Saving checkpoint at {epoch} epochs\n"
        text += (f"{stamp(k)}Epoch(val)  [{epoch}][10/20]    eta: 0:00:01  time: 0.0500  data_time: 0.0010  "
                 "memory: 300\n")
        value = 50.0 + epoch
        text += (f"{stamp(k)}Epoch(val) [{epoch}][20/20]    aAcc: 90.0000  {metric}: {value:.4f}  mAcc: 70.0000  "
                 "data_time: 0.0010  time: 0.0500\n")
        js += json.dumps({"aAcc": 90.0, metric: value, "mAcc": 70.0, **(extra_val or {}), "data_time": 0.001,
                          "time": 0.05, "step": epoch}) + "\n"
        k += 1
    (start / f"{name}.log").write_text(text)
    (start / "vis_data" / "scalars.json").write_text(js)
    (root / "last_checkpoint").write_text(str(root / "epoch_3.pth"))
    return root


def test_mmengine_epoch_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _engine_epoch_run(tmp_path / "run")
    row = _one(capsys, run)
    assert row["curve"] == [[120, 51.0, 90.0], [240, 52.0, 90.0], [360, 53.0, 90.0]]
    assert (row["iter"], row["max_iters"], row["state"]) == (360, 360, "completed")
    assert (row["by_epoch"], row["epoch"], row["max_epochs"]) == (True, 3, 3)
    assert (row["lr"], row["loss"], row["memory_mb"], row["sec_per_iter"]) == (0.01, 0.3, 2100, 0.3)
    (run / "20240102_100000" / "vis_data" / "scalars.json").unlink()  # the text log alone
    row = _one(capsys, run)
    assert row["curve"] == [[120, 51.0, 90.0], [240, 52.0, 90.0], [360, 53.0, 90.0]]
    assert (row["iter"], row["max_iters"], row["epoch"], row["state"]) == (360, 360, 3, "completed")


def test_val_records_without_a_segmentation_metric_are_not_train_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _engine_epoch_run(tmp_path / "run", metric="accuracy/top1")
    row = _one(capsys, run)
    assert row["curve"] == [[120, None, 90.0], [240, None, 90.0], [360, None, 90.0]]
    assert (row["lr"], row["loss"], row["sec_per_iter"]) == (0.01, 0.3, 0.3)
    run2 = tmp_path / "cls"
    (run2 / "20240102_100000" / "vis_data").mkdir(parents=True)
    (run2 / "20240102_100000" / "vis_data" / "scalars.json").write_text(
        '{"lr": 0.1, "data_time": 0.01, "loss": 2.0, "time": 0.2, "epoch": 1, "iter": 100, "memory": 900, '
        '"step": 100}\n'
        '{"accuracy/top1": 40.0, "accuracy/top5": 70.0, "data_time": 0.01, "time": 0.05, "step": 1}\n'
        '{"coco/bbox_mAP": 0.1, "data_time": 0.01, "time": 0.05, "step": 1}\n')
    row = _one(capsys, run2)
    assert (row["iter"], row["lr"], row["loss"], row["sec_per_iter"], row["curve"]) == (100, 0.1, 2.0, 0.2, [])


def test_metrics_with_a_dataset_prefix_and_other_metrics(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    for name, metric, shown in (("pre", "citys_mIoU", "mIoU"), ("slash", "cityscapes/mIoU", "mIoU"),
                                ("dice", "mDice", "mDice"), ("fscore", "val/mFscore", "mFscore")):
        row = _one(capsys, _engine_epoch_run(tmp_path / name, metric=metric))
        assert [p[1] for p in row["curve"]] == [51.0, 52.0, 53.0], name  # type: ignore[attr-defined]
        assert (row["best_miou"], row["metric"]) == (53.0, shown), name
    # mIoU first when a run has several
    row = _one(capsys, _engine_epoch_run(tmp_path / "both", metric="mDice", extra_val={"mIoU": 40.0}))
    assert row["metric"] == "mIoU" and row["best_miou"] == 40.0


def test_memory_from_the_text_log_when_the_json_lacks_it(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    row = _one(capsys, _engine_epoch_run(tmp_path / "run", json_memory=False))
    assert row["memory_mb"] == 2100


# --- what is not read ------------------------------------------------------------------------------

def test_folder_of_logs_prove_jobs_cannot_read_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "exp" / "odd"
    odd.mkdir(parents=True)
    (odd / "train.log").write_text("epoch 1 step 10 loss=0.3\nepoch 1 step 20 loss=0.2\n")
    _work_dir_0x(tmp_path / "exp" / "fcn", _head0() + _train0(50, 200, 10), None, latest=False)
    assert main(["status", "--root", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    rows = {Path(str(r["run_dir"])).name: r for r in json.loads(out)}
    assert sorted(rows) == ["fcn", "odd"]
    notes = rows["odd"]["notes"]
    assert isinstance(notes, list) and any("no log prove-jobs can read" in n and "train.log" in n for n in notes)
    assert "Traceback" not in err
    assert main(["status", str(odd), "--json"]) == 0  # the run dir is one too: no circle of advice
    [row] = json.loads(capsys.readouterr().out)
    assert any("no log prove-jobs can read" in n for n in row["notes"])


def test_folder_with_a_stray_log_above_runs_is_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "download.log").write_text("fetched 3 files\n")
    _work_dir_0x(tmp_path / "fcn", _head0() + _train0(50, 200, 10), None, latest=False)
    rows = _status(capsys, "--root", str(tmp_path))
    assert [Path(str(r["run_dir"])).name for r in rows] == ["fcn"]


# --- console captures ------------------------------------------------------------------------------

def test_console_capture_of_mmseg0x_with_colours(tmp_path: Path) -> None:
    text = _head0() + _train0(50, 200, 10) + _train0(100, 200, 20) + _val0(500, 30, 0.9, 0.5, 0.6)
    coloured = "".join(f"\x1b[32m{line}\x1b[0m\n" if " - mmseg - " in line else line + "\n"
                       for line in text.splitlines())
    path = tmp_path / "job.out"
    path.write_text(coloured)
    log = read_text_log(path)
    assert (log.last_iter, log.max_iters) == (100, 200)
    assert [(p.iter, p.miou) for p in log.curve] == [(100, 50.0)]


def test_console_capture_of_an_mmengine_epoch_loop(tmp_path: Path) -> None:
    path = tmp_path / "job.out"
    path.write_text("\x1b[32m01/02 10:00:01\x1b[0m - mmengine - \x1b[4m\x1b[97mINFO\x1b[0m - "
                    "Epoch(train) [2][ 50/120]  "
                    "lr: 1.0000e-02  eta: 0:00:10  time: 0.3000  data_time: 0.0100  memory: 2100  loss: 0.2000\n"
                    "01/02 10:00:02 - mmengine - INFO - Epoch(val) [2][20/20]    aAcc: 90.0000  mIoU: 52.0000  "
                    "mAcc: 70.0000  data_time: 0.0010  time: 0.0500\n")
    log = read_text_log(path)
    assert log.last_iter == 240 and [(p.iter, p.miou) for p in log.curve] == [(240, 52.0)]
    assert (log.by_epoch, log.epoch) == (True, 2)


def test_the_0x_fixture_still_reads(tmp_path: Path) -> None:
    log = read_run_log(Path(__file__).parent / "fixtures" / "logs" / "mmseg0x")
    assert [p.iter for p in log.curve] == [2000, 4000]


def test_status_shows_an_epoch_loop_in_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    start = run / "20240102_100000"
    start.mkdir(parents=True)
    (start / "20240102_100000.log").write_text(
        f"{ENGINE_STAMP.format(m=0, s=0)}Config:\n{CONFIG_ENGINE}\n"
        f"{ENGINE_STAMP.format(m=0, s=1)}Epoch(train) [2][ 50/120]  lr: 1.0000e-02  eta: 0:00:10  time: 0.3000  "
        "data_time: 0.0100  memory: 2100  loss: 0.2000\n")
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Running @ ep 2/3" in out, out


def test_the_sparse_reader_reads_every_format_as_the_full_parse(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from prove_jobs.logs import LIMITS, read_run_log_full

    monkeypatch.setattr(LIMITS, "sparse_min_bytes", 0)
    text = (_head0() + _train0(50, 200, 10) + _train0(100, 200, 20) + _val0(500, 30, 0.9298, 0.5778, 0.6612)
            + _train0(150, 200, 40))
    runs = [_work_dir_0x(tmp_path / "old", text, None, latest=False), _engine_epoch_run(tmp_path / "epochs"),
            _engine_epoch_run(tmp_path / "dice", metric="mDice", json_memory=False)]
    for run in runs:
        assert read_run_log(run) == read_run_log_full(run), run.name
    assert read_run_log(runs[1]).max_iters == 360 and read_run_log(runs[2]).metric == "mDice"
