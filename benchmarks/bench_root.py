"""Benchmark: a group's history, ``status --root`` and ``report --root`` on 165, 1,000 and 10,000 runs.

Usage::

    .venv/bin/python benchmarks/bench_root.py [--runs 165 1000 10000] [--data bench-data-root] [--repeat 5]

Builds (once; reused while its parameters match) a root per count under ``<data>/root-<N>/``
(``bench-data-root/``: ``bench_status.py`` empties ``bench-data/`` when its own parameters change), the
same mix of what a group's disk holds, by run number ``k``, out of every 20:

* 12 mmseg 1.x iteration runs in prove-jobs' layout (``<VARIANT>/baseline/cityscapes/<model>_<k>/``),
  one start, mmengine's dump of the config at the top of the work dir;
* 2 of those with three starts (two resumes from a checkpoint);
* 2 mmseg 0.x work dirs (``users/<u>/work_dirs/<config>_<k>/``: ``<ts>.log``, ``<ts>.log.json``,
  ``latest.pth``, the config): mmcv's text (``Iter [50/8000]\\tlr: ...``, ``Iter(val) [1000]\\tmIoU: 0.7610``);
* 2 epoch-based 1.x runs (``Epoch(train)  [3][ 50/300]``; 12 epochs of 300 iterations);
* 1 live run (its files' mtimes set to now at each bench run: still training, 5,000 of 8,000);
* 1 hand-started 1.x run outside the layout (``users/<u>/work_dirs/<config>_<k>/`` with ``config.py``).

The logs are a tenth of ``bench_status.py``'s (8,000-iteration schedules, a train record every 50
iterations, a val every 1,000, a short text-log header): about 0.1 MB a run, 1.1 GB for 10,000.

Each command runs as a user runs it (the console script, a private ``XDG_CACHE_HOME``), its wall time and
peak RSS taken from ``RUSAGE_CHILDREN`` of a fresh helper process (with the prefetch's forked workers:
the largest of them): cold (an empty cache folder: the first look, parsing on every core), then warm
(the median of ``--repeat``, nothing changed, the two commands interleaved), and warm report against warm
status at each size (the goal: within 2x, at 165 runs as at 1,000).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_ITERS, LOG_INTERVAL, VAL_INTERVAL = 8_000, 50, 1_000
EPOCHS, EPOCH_ITERS = 12, 300
LIVE_END = 5_000
STARTS = ((LOG_INTERVAL, 3_050), (3_050, 6_020), (6_050, MAX_ITERS))  # resumed from iter_3000, iter_6000
PARAMS = {"version": 2, "max_iters": MAX_ITERS, "log_interval": LOG_INTERVAL, "val_interval": VAL_INTERVAL,
          "epochs": EPOCHS, "starts": STARTS}
VARIANTS = ("BASELINE", "AUG_STRONG", "LR_HALF", "LR_DOUBLE", "BS4")
MODELS = ("segformer_mit-b3", "deeplabv3plus_r50", "pspnet_r101", "mask2former_swin-t")
ZOO = ("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024", "deeplabv3_r50-d8_4xb2-40k_cityscapes-769x769")
T0 = time.mktime((2025, 3, 1, 8, 0, 0, 0, 0, -1))
SEC = 0.4567

CONFIG_1X = """crop_size = (512, 1024)
data_root = 'data/cityscapes/'
dataset_type = 'CityscapesDataset'
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=1000, type='CheckpointHook'),
    logger=dict(interval=50, log_metric_by_epoch=False, type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    timer=dict(type='IterTimerHook'))
model = dict(
    backbone=dict(depth=50, norm_cfg=dict(requires_grad=True, type='SyncBN'), type='ResNetV1c'),
    decode_head=dict(channels=512, in_channels=2048, num_classes=19, type='PSPHead'),
    pretrained='open-mmlab://resnet50_v1c',
    test_cfg=dict(mode='whole'),
    type='EncoderDecoder')
optim_wrapper = dict(
    clip_grad=None,
    optimizer=dict(lr=0.01, momentum=0.9, type='SGD', weight_decay=0.0005),
    type='OptimWrapper')
param_scheduler = [
    dict(begin=0, by_epoch=False, end=8000, eta_min=0.0001, power=0.9, type='PolyLR'),
]
randomness = dict(seed=0)
train_cfg = dict(max_iters=8000, type='IterBasedTrainLoop', val_interval=1000)
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        data_root='data/cityscapes/',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(keep_ratio=True, ratio_range=(0.5, 2.0), scale=(2048, 1024), type='RandomResize'),
            dict(cat_max_ratio=0.75, crop_size=(512, 1024), type='RandomCrop'),
            dict(prob=0.5, type='RandomFlip'),
            dict(type='PhotoMetricDistortion'),
            dict(type='PackSegInputs'),
        ],
        type='CityscapesDataset'),
    num_workers=2,
    sampler=dict(shuffle=True, type='InfiniteSampler'))
val_evaluator = dict(iou_metrics=['mIoU'], type='IoUMetric')
work_dir = './work_dirs/pspnet'
"""
CONFIG_EPOCH = CONFIG_1X.replace("train_cfg = dict(max_iters=8000, type='IterBasedTrainLoop', val_interval=1000)",
                                 f"train_cfg = dict(max_epochs={EPOCHS}, type='EpochBasedTrainLoop', val_interval=1)")
CONFIG_0X = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(type='EncoderDecoder', pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(type='ResNetV1c', depth=50, norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(type='PSPHead', in_channels=2048, channels=512, num_classes=19),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
crop_size = (512, 1024)
data = dict(samples_per_gpu=2, workers_per_gpu=2,
    train=dict(type='CityscapesDataset', data_root='data/cityscapes/', pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
        dict(type='Resize', img_scale=(2048, 1024), ratio_range=(0.5, 2.0)),
        dict(type='RandomCrop', crop_size=(512, 1024), cat_max_ratio=0.75)]))
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook', by_epoch=False)])
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optimizer_config = dict()
lr_config = dict(policy='poly', power=0.9, min_lr=0.0001, by_epoch=False)
runner = dict(type='IterBasedRunner', max_iters=8000)
checkpoint_config = dict(by_epoch=False, interval=1000)
evaluation = dict(interval=1000, metric='mIoU', pre_eval=True)
work_dir = './work_dirs/pspnet'
gpu_ids = range(0, 4)
"""


def _stamp(t: float, legacy: bool = False) -> str:
    if legacy:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + ",123"
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))


def _header(t: float, resume_from: int | None, loop: str) -> str:
    s = _stamp(t)
    text = (f"{s} - mmengine - INFO - \n------------------------------------------------------------\n"
            "System environment:\n    sys.platform: linux\n    CUDA available: True\n    MMEngine: 0.10.7\n\n"
            "Runtime environment:\n    seed: 0\n    Distributed launcher: slurm\n    Distributed training: True\n"
            "    GPU number: 4\n------------------------------------------------------------\n\n"
            f"{s} - mmengine - INFO - Config:\n{loop}\n\n")
    if resume_from is not None:
        text += (f"{s} - mmengine - INFO - Load checkpoint from iter_{resume_from}.pth\n"
                 f"{s} - mmengine - INFO - resumed epoch: 0, iter: {resume_from}\n")
    return text + f"{s} - mmengine - INFO - Checkpoints will be saved to /work_dirs/run.\n"


def _numbers(i: int, k: int) -> tuple[float, float, float, float]:
    jitter = ((i * 7919 + k * 104729) % 1000) / 1e5
    lr = 0.01 * (1 - min(i, MAX_ITERS) / MAX_ITERS) ** 0.9 + 1e-4
    return lr, SEC + jitter, 0.2 + 0.8 / (1 + i / 4000) + jitter, 40 + 30 * i / MAX_ITERS + (k % 7) / 10


def _iteration_start(d: Path, k: int, first: int, end: int, t: float, resume: int | None) -> float:
    """One mmengine 1.x start of an iteration loop: ``<ts>/vis_data/scalars.json`` and ``<ts>/<ts>.log``."""
    js, text = [], [_header(t, resume, f"train_cfg = dict(max_iters={MAX_ITERS}, type='IterBasedTrainLoop')")]
    for i in range(first, end + 1, LOG_INTERVAL):
        t += LOG_INTERVAL * SEC
        lr, sec, loss, miou = _numbers(i, k)
        js.append(f'{{"base_lr": 0.01, "lr": {lr!r}, "data_time": 0.01, "loss": {loss!r}, "decode.loss_ce": '
                  f'{loss * 0.7!r}, "time": {sec!r}, "iter": {i}, "memory": 3512, "step": {i}}}\n')
        text.append(f"{_stamp(t)} - mmengine - INFO - Iter(train) [{i:4d}/{MAX_ITERS}]  base_lr: 1.0000e-02 "
                    f"lr: {lr:.4e}  eta: 0:10:00  time: {sec:.4f}  data_time: 0.0100  memory: 3512  loss: "
                    f"{loss:.4f}  decode.loss_ce: {loss * 0.7:.4f}\n")
        if i % VAL_INTERVAL == 0:
            t += 30
            js.append(f'{{"aAcc": {miou + 25:.2f}, "mIoU": {miou:.2f}, "mAcc": {miou + 9:.2f}, "data_time": 0.002, '
                      f'"time": 0.15, "step": {i}}}\n')
            text.append(f"{_stamp(t)} - mmengine - INFO - Saving checkpoint at {i} iterations\n"
                        f"{_stamp(t)} - mmengine - INFO - Iter(val) [500/500]    aAcc: {miou + 25:.4f}  mIoU: "
                        f"{miou:.4f}  mAcc: {miou + 9:.4f}  data_time: 0.0020  time: 0.1500\n")
    _write_start(d, t, "".join(js), "".join(text))
    return t


def _epoch_start(d: Path, k: int, t: float) -> None:
    """One mmengine 1.x start of an epoch loop (LoggerHook's ``log_metric_by_epoch``: a val's step is its epoch)."""
    js, text = [], [_header(t, None, f"train_cfg = dict(max_epochs={EPOCHS}, type='EpochBasedTrainLoop')")]
    for epoch in range(1, EPOCHS + 1):
        for inner in range(LOG_INTERVAL, EPOCH_ITERS + 1, LOG_INTERVAL):
            i = (epoch - 1) * EPOCH_ITERS + inner
            t += LOG_INTERVAL * SEC
            lr, sec, loss, _ = _numbers(i, k)
            js.append(f'{{"lr": {lr!r}, "data_time": 0.01, "loss": {loss!r}, "time": {sec!r}, "epoch": {epoch}, '
                      f'"iter": {i}, "memory": 3512, "step": {i}}}\n')
            text.append(f"{_stamp(t)} - mmengine - INFO - Epoch(train)  [{epoch}][{inner:3d}/{EPOCH_ITERS}]  "
                        f"lr: {lr:.4e}  eta: 0:10:00  time: {sec:.4f}  data_time: 0.0100  memory: 3512  "
                        f"loss: {loss:.4f}\n")
        miou = 40 + 30 * epoch / EPOCHS
        js.append(f'{{"aAcc": {miou + 25:.2f}, "mIoU": {miou:.2f}, "mAcc": {miou + 9:.2f}, "data_time": 0.002, '
                  f'"time": 0.15, "step": {epoch}}}\n')
        text.append(f"{_stamp(t)} - mmengine - INFO - Epoch(val) [{epoch}][100/100]    aAcc: {miou + 25:.4f}  "
                    f"mIoU: {miou:.4f}  mAcc: {miou + 9:.4f}  data_time: 0.0020  time: 0.1500\n")
    _write_start(d, t, "".join(js), "".join(text))


def _write_start(d: Path, t: float, js: str, text: str) -> None:
    ts = d.name
    (d / "vis_data").mkdir(parents=True)
    (d / "vis_data" / "scalars.json").write_text(js)
    (d / f"{ts}.log").write_text(text)
    (d / "vis_data" / "config.py").write_text("work_dir = './work_dirs/run'\n")


def _legacy_run(work: Path, k: int, t: float) -> None:
    """An mmseg 0.x work dir as mmcv's IterBasedRunner leaves it."""
    ts = time.strftime("%Y%m%d_%H%M%S", time.localtime(t))
    text = [f"{_stamp(t, True)} - mmseg - INFO - Environment info:\n------------------------------------------------"
            f"------------\nsys.platform: linux\nMMSegmentation: 0.30.0+\n---\n\n"
            f"{_stamp(t, True)} - mmseg - INFO - Distributed training: True\n"]
    js = ['{"env_info": "sys.platform: linux", "seed": 0, "exp_name": "pspnet.py", "mmseg_version": "0.30.0"}\n']
    for i in range(LOG_INTERVAL, MAX_ITERS + 1, LOG_INTERVAL):
        t += LOG_INTERVAL * SEC
        lr, sec, loss, miou = _numbers(i, k)
        text.append(f"{_stamp(t, True)} - mmseg - INFO - Iter [{i}/{MAX_ITERS}]\tlr: {lr:.3e}, eta: 0:10:00, "
                    f"time: {sec:.3f}, data_time: 0.010, memory: 3512, decode.loss_ce: {loss * 0.7:.4f}, "
                    f"loss: {loss:.4f}\n")
        js.append(f'{{"mode": "train", "epoch": 1, "iter": {i}, "lr": {lr:.5f}, "memory": 3512, "data_time": 0.01, '
                  f'"decode.loss_ce": {loss * 0.7:.4f}, "loss": {loss:.4f}, "time": {sec:.4f}}}\n')
        if i % VAL_INTERVAL == 0:
            t += 30
            text.append(f"{_stamp(t, True)} - mmseg - INFO - Saving checkpoint at {i} iterations\n"
                        f"{_stamp(t, True)} - mmseg - INFO - Iter(val) [{i}]\taAcc: {(miou + 25) / 100:.4f}, "
                        f"mIoU: {miou / 100:.4f}, mAcc: {(miou + 9) / 100:.4f}\n")
            js.append(f'{{"mode": "val", "epoch": 1, "iter": {i - LOG_INTERVAL}, "lr": {lr:.5f}, "aAcc": '
                      f'{(miou + 25) / 100:.4f}, "mIoU": {miou / 100:.4f}, "mAcc": {(miou + 9) / 100:.4f}}}\n')
    work.mkdir(parents=True)
    (work / f"{ts}.log").write_text("".join(text))
    (work / f"{ts}.log.json").write_text("".join(js))
    (work / f"{work.name}.py").write_text(CONFIG_0X)
    (work / "latest.pth").write_bytes(b"")


def run_dir(root: Path, k: int) -> Path:
    kind = k % 20
    if kind in (14, 15, 19):  # a user's own work_dirs, outside prove-jobs' layout
        return root / "users" / f"u{k % 7}" / "work_dirs" / f"{ZOO[k % 2]}_{k:05d}"
    return root / VARIANTS[k % len(VARIANTS)] / "baseline" / "cityscapes" / f"{MODELS[k % len(MODELS)]}_{k:05d}"


def write_run(root: Path, k: int) -> None:
    work, kind, t = run_dir(root, k), k % 20, T0 + k * 60.0

    def stamp(at: float) -> Path:
        return work / time.strftime("%Y%m%d_%H%M%S", time.localtime(at))

    if kind in (14, 15):
        _legacy_run(work, k, t)
        return
    if kind in (16, 17):
        _epoch_start(stamp(t), k, t)
    elif kind in (12, 13):
        for n, (first, end) in enumerate(STARTS):
            t = _iteration_start(stamp(t), k, first, end, t, None if n == 0 else first - LOG_INTERVAL) + 3600
    else:
        _iteration_start(stamp(t), k, LOG_INTERVAL, LIVE_END if kind == 18 else MAX_ITERS, t, None)
    (work / ("config.py" if kind == 19 else f"{work.name}.py")).write_text(CONFIG_EPOCH if kind in (16, 17)
                                                                            else CONFIG_1X)
    (work / "last_checkpoint").write_text(str(work / "iter_1000.pth"))


def live_runs(root: Path, runs: int) -> list[Path]:
    return [run_dir(root, k) for k in range(runs) if k % 20 == 18]


def ensure_root(root: Path, runs: int) -> float:
    from bench_status import generated  # this folder is the script's: sys.path[0]

    def write() -> None:
        for k in range(runs):
            write_run(root, k)

    return generated(root, dict(PARAMS, runs=runs), write)


def size_of(root: Path) -> tuple[int, int]:
    files, total = 0, 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(folder, name)).st_size
    return files, total


MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
assert done.returncode == 0, done.stderr
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """The command's wall seconds and peak RSS in MB (its own, or its largest forked worker's)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[165, 1_000, 10_000])
    ap.add_argument("--data", type=Path, default=REPO / "bench-data-root",
                    help="where the roots go (not bench_status.py's bench-data/: it clears that folder)")
    ap.add_argument("--repeat", type=int, default=5, help="warm runs of each command (the median is shown)")
    args = ap.parse_args(argv)
    script = str(Path(sys.executable).parent / "prove-jobs")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(REPO)
    import compileall

    compileall.compile_dir(REPO / "prove_jobs", quiet=1)  # as an install runs: with byte code
    rows: list[tuple[int, str, float, float, float, float]] = []
    for runs in args.runs:
        root = args.data.resolve() / f"root-{runs}"
        made = ensure_root(root, runs)
        files, total = size_of(root)
        print(f"root-{runs}: {runs:,} runs, {files:,} files, {total / 1e9:.2f} GB"
              + (f" (generated in {made:.0f} s)" if made else ""), flush=True)
        now = time.time()
        for work in live_runs(root, runs):  # still training: written to a moment ago
            for folder, _, names in os.walk(work):
                for name in names:
                    os.utime(os.path.join(folder, name), (now, now))
        commands = (("status --root R --json", [script, "status", "--root", str(root), "--json"]),
                    ("report --root R --format json", [script, "report", "--root", str(root), "--format", "json"]))
        with tempfile.TemporaryDirectory(prefix="bench-root-cache-") as caches:
            envs = [dict(env, XDG_CACHE_HOME=os.path.join(caches, str(i))) for i in range(len(commands))]
            cold = [measure(command, envs[i]) for i, (_, command) in enumerate(commands)]
            # warm: interleaved, so that a busy moment of the machine hits both commands alike
            warm: list[list[tuple[float, float]]] = [[] for _ in commands]
            for _ in range(args.repeat):
                for i, (_, command) in enumerate(commands):
                    warm[i].append(measure(command, envs[i]))
        for (name, _), (cold_s, cold_mb), times in zip(commands, cold, warm, strict=True):
            rows.append((runs, name, cold_s, cold_mb, statistics.median(s for s, _ in times), max(m for _, m in times)))
            print(f"  {name}: cold {cold_s:.2f} s {cold_mb:.0f} MB, warm {rows[-1][4]:.2f} s {rows[-1][5]:.0f} MB",
                  flush=True)
    print(f"\n{'runs':>7}  {'command':<32} {'cold s':>7} {'cold MB':>8} {'warm s':>7} {'warm MB':>8}")
    for runs, name, cold_s, cold_mb, warm_s, warm_mb in rows:
        print(f"{runs:>7,}  {name:<32} {cold_s:>7.2f} {cold_mb:>8.0f} {warm_s:>7.2f} {warm_mb:>8.0f}")
    print(f"\nwarm, side by side (the median of {args.repeat}, interleaved): report within 2x of status at any size")
    print(f"{'runs':>7}  {'status s':>9} {'report s':>9}  report/status")
    for runs in dict.fromkeys(r[0] for r in rows):
        status_s, report_s = (next(r[4] for r in rows if r[0] == runs and r[1].startswith(name))
                              for name in ("status", "report"))
        print(f"{runs:>7,}  {status_s:>9.2f} {report_s:>9.2f}  {report_s / status_s:>12.1f}x")
    counts = sorted(set(args.runs))
    for small, big in itertools.pairwise(counts):
        print(f"\ngrowth from {small:,} to {big:,} runs ({big / small:.0f}x the runs):")
        for name in dict.fromkeys(r[1] for r in rows):
            a = next(r for r in rows if r[0] == small and r[1] == name)
            b = next(r for r in rows if r[0] == big and r[1] == name)
            print(f"  {name:<32} cold {b[2] / a[2]:.1f}x, warm {b[4] / a[4]:.1f}x, warm RSS {b[5] / a[5]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
