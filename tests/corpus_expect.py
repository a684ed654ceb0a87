"""What a correct reader must report for each run of tests/fixtures/corpus (issue 21).

An independent reading of the logs, written from the files themselves and from what mmengine and
mmcv 0.x print; it shares no code with prove_jobs (and must not import it). Where a value is not
in the files it is None (unknown), never 0.

Formats read here, as the corpus has them:

* mmengine 1.x text log ``<work_dir>/<ts>/<ts>.log``::

      2023/06/14 22:30:21 - mmengine - INFO - Iter(train) [ 100/3000]  lr: ...  memory: 5948  loss: ...
      2023/06/16 12:11:05 - mmengine - INFO - Iter(val) [11/11]  aAcc: 80.4200  mIoU: 61.2500  mAcc: 74.1300 ...
      2023/06/10 14:18:40 - mmengine - INFO - Epoch(train)  [1][ 50/106]  lr: ...
      2023/06/10 14:19:02 - mmengine - INFO - Epoch(val) [1][12/12]  coco/bbox_mAP: 0.0120 ...
      2023/06/14 23:35:57 - mmengine - INFO - Iter(test) [15/15]  aAcc: 60.8000  mIoU: 25.5100 ...

  a validation belongs to the iteration trained last before it (iteration loops) or to the end of
  its epoch (epoch loops: global iteration = epoch x iterations per epoch).
* mmcv 0.x text log ``<work_dir>/<ts>.log`` (any logger name: mmseg, mmcls, enseg)::

      2023-02-05 19:41:38,315 - mmcls - INFO - Epoch [1][10/72]	lr: 5.000e-03, ..., memory: 2456, loss: 1.2117
      2022-01-05 17:08:06,223 - enseg - INFO - Iter [5/1000]	lr_rec: 9.964e-04, ..., memory: 6007, ...
      2021-10-05 07:56:31,771 - mmseg - INFO - Iter(val) [80000]	mIoU: 0.5326, mAcc: 0.5906, aAcc: 0.9282

  0.x metrics are fractions (0.5326 = 53.26 %). ``Iter(val) [K]``: K is the iteration when it is the
  last trained one (or within one log interval after it); older mmseg prints the val loader's length
  there, and the validation then belongs to the iteration trained last before it.
* mmcv 0.x JSON log ``<work_dir>/<ts>.log.json``: one record a line; ``"mode": "val"`` records carry
  the val loader's length as ``iter`` when it is smaller than the last train record's (mmseg 0.x
  notebooks), else the iteration.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"

TS_DIR = re.compile(r"^\d{8}_\d{6}")
# mmengine: "2023/06/14 22:30:21 - mmengine - INFO - ..." (older mmengine: "06/14 22:30:21 - ...")
ENGINE_LINE = re.compile(r"^(?:(\d{4})/)?(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2}) - mmengine - (\w+) - (.*)$")
# mmcv 0.x: "2023-02-05 19:41:38,315 - mmcls - INFO - ..."
MMCV_LINE = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}),\d+ - ([\w.]+) - (\w+) - (.*)$")

ITER_TRAIN = re.compile(r"^Iter\(train\)\s*\[\s*(\d+)/(\d+)\]")
EPOCH_TRAIN = re.compile(r"^Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]")
ITER_VAL = re.compile(r"^(?:Iter|Epoch)\(val\)\s*(?:\[(\d+)\])?\s*\[\s*\d+/\d+\]\s*(.*)$")
TEST = re.compile(r"^(?:Iter|Epoch)\(test\)")
SAVED = re.compile(r"Saving checkpoint at (\d+) (epochs|iterations)")
EPOCH_VAL_AT = re.compile(r"^Epoch\(val\)\s*\[(\d+)\]")
RESUMED_ENGINE = re.compile(r"resumed epoch: (\d+), iter: (\d+)")

MMCV_ITER = re.compile(r"^Iter \[(\d+)/(\d+)\]")
MMCV_EPOCH = re.compile(r"^Epoch \[(\d+)\]\[(\d+)/(\d+)\]")
MMCV_VAL = re.compile(r"^(Iter|Epoch)\(val\) \[(\d+)\](?:\[(\d+)\])?\s*(.*)$")
RESUMED_MMCV = re.compile(r"resumed from epoch: (\d+), iter (\d+)")

# a validation's result (not its progress lines, which print only eta, time, data_time, memory)
VAL_LINE = re.compile(r"^(?:Iter|Epoch)\(val\)\s*(?:\[\s*\d+\s*(?:/\s*\d+\s*)?\])+\s*(.*)$")
VAL_ITEM = re.compile(r"(?:^|[\s,])([A-Za-z_][\w./-]*): [-+]?\d")
NOT_METRICS = {"eta", "time", "data_time", "memory"}
MEMORY = re.compile(r"\bmemory: (\d+)")
# mIoU with or without a dataset prefix ("citys_mIoU: 61.2"), as text prints it
MIOU = re.compile(r"(?:^|[\s,])(?:[\w/]+_)?mIoU: ([\d.]+)")
MAX_EPOCHS = re.compile(r"max_epochs\s*=\s*(\d+)")
MMCV_MAX_EPOCHS = re.compile(r"(?:max_epochs\s*=\s*|total_epochs\s*=\s*)(\d+)")


@dataclass
class Start:
    """One process's log: a start of the run."""

    name: str  # its timestamp
    kind: str = "aborted"  # trained | test | aborted  (set once read)
    first_train_t: float | None = None
    end_t: float | None = None  # its last training line's: a train record, a checkpoint saved, a val result
    resumed_from: int | None = None  # iteration it resumed from, when it says so
    loop: str | None = None  # iter | epoch
    last_iter: int | None = None  # global iteration
    first_iter: int | None = None
    epoch: int | None = None
    iters_per_epoch: int | None = None
    max_iters: int | None = None
    max_epochs: int | None = None
    memory: int | None = None
    ended_epochs: set[int] = field(default_factory=set)  # epochs whose end the log shows (val, checkpoint)
    saved_iters: set[int] = field(default_factory=set)
    vals: list[tuple[int, float]] = field(default_factory=list)  # (iteration, mIoU %)


@dataclass
class Expectation:
    """What `status` must say of one corpus run."""

    key: str  # corpus folder / work dir, relative to CORPUS
    work_dir: Path
    name: str | None  # the run's expected name (None: not asserted beyond consistency)
    fmt: str  # mmengine-iter | mmengine-epoch | mmcv0x-iter | mmcv0x-epoch | mmcv0x-json
    starts: list[Start]
    iter: int | None
    epoch: int | None
    max_iters: int | None
    max_epochs: int | None
    curve: list[tuple[int, float]]
    best_miou: float | None
    finished: bool | None
    memory_mb: int | None
    elapsed_s: float | None
    counted: list[str]  # the starts whose time is the wall time

    @property
    def last_miou(self) -> float | None:
        return self.curve[-1][1] if self.curve else None


def _t(year: int, mon: int, day: int, h: int, m: int, s: int) -> float:
    return float(calendar.timegm((year, mon, day, h, m, s, 0, 0, 0)))  # node clock: only differences used


def _dedupe_vals(vals: list[tuple[int, float]]) -> list[tuple[int, float]]:
    out: dict[int, float] = {}
    for it, miou in vals:
        out[it] = miou  # lines printed twice (a notebook's second handler) count once
    return sorted(out.items())


def _ends(start: Start, msg: str, t: float) -> None:
    """Checkpoints and epoch ends; and where the start's training ends (with :func:`_train`): its last train
    record, checkpoint or val result (warnings, tests and tracebacks after it are not training)."""
    if m := SAVED.search(msg):
        (start.ended_epochs if m.group(2) == "epochs" else start.saved_iters).add(int(m.group(1)))
        start.end_t = t
    if (v := VAL_LINE.match(msg)) and any(k not in NOT_METRICS for k in VAL_ITEM.findall(v.group(1))):
        start.end_t = t
    if (m := EPOCH_VAL_AT.match(msg)) and start.loop == "epoch":
        start.ended_epochs.add(int(m.group(1)))


def _train(start: Start, msg: str, t: float, it: re.Match[str] | None, ep: re.Match[str] | None) -> int | None:
    """A train line of an iteration loop (``it``: ``[i/N]``) or an epoch loop (``ep``: ``[e][i/n]``): its
    global iteration, noted in ``start`` (None: not a train line)."""
    if it:
        g, n = int(it.group(1)), int(it.group(2))
        start.loop, start.max_iters = "iter", n
    elif ep:
        e, i, n = int(ep.group(1)), int(ep.group(2)), int(ep.group(3))
        start.loop, start.epoch, start.iters_per_epoch = "epoch", e, n
        g = (e - 1) * n + i
    else:
        return None
    start.first_train_t = start.first_train_t if start.first_train_t is not None else t
    start.first_iter = start.first_iter if start.first_iter is not None else g
    start.last_iter, start.end_t = g, t
    if mem := MEMORY.search(msg):
        start.memory = int(mem.group(1))
    return g


def read_engine_text(log: Path) -> Start:
    """A start's mmengine text log."""
    start = Start(name=log.stem)
    year = int(log.stem[:4])
    last_train = 0
    text = log.read_text(errors="replace")
    for found in MAX_EPOCHS.finditer(text):
        start.max_epochs = int(found.group(1))  # the config dump's train_cfg; last one wins
    for line in text.splitlines():
        m = ENGINE_LINE.match(line)
        if not m:
            continue
        y, mon, day, h, mi, s, _level, msg = m.groups()
        t = _t(int(y) if y else year, int(mon), int(day), int(h), int(mi), int(s))
        _ends(start, msg, t)
        if (g := _train(start, msg, t, ITER_TRAIN.match(msg), EPOCH_TRAIN.match(msg))) is not None:
            last_train = g
        elif v := ITER_VAL.match(msg):
            if (miou := MIOU.search(v.group(2))) and start.last_iter is not None:
                if start.loop == "epoch":
                    at = int(v.group(1)) * (start.iters_per_epoch or 0) if v.group(1) else last_train
                else:
                    at = last_train
                start.vals.append((at, float(miou.group(1))))
        elif TEST.match(msg) and start.kind == "aborted":
            start.kind = "test"
        if r := RESUMED_ENGINE.search(msg):
            start.resumed_from = int(r.group(2))
    if start.last_iter is not None:
        start.kind = "trained"
    start.vals = _dedupe_vals(start.vals)
    return start


def read_mmcv_text(log: Path, log_json: Path | None) -> Start:
    """A start's mmcv 0.x text log (its JSON twin only for nothing: the text has it all)."""
    start = Start(name=log.name.split(".")[0])
    last_train = 0
    text = log.read_text(errors="replace")
    for found in MMCV_MAX_EPOCHS.finditer(text):
        start.max_epochs = int(found.group(1))
    for line in text.splitlines():
        m = MMCV_LINE.match(line)
        if not m:
            continue
        y, mon, day, h, mi, s, _logger, _level, msg = m.groups()
        t = _t(int(y), int(mon), int(day), int(h), int(mi), int(s))
        _ends(start, msg, t)
        if (g := _train(start, msg, t, MMCV_ITER.match(msg), MMCV_EPOCH.match(msg))) is not None:
            last_train = g
        elif v := MMCV_VAL.match(msg):
            kind, k, _k2, rest = v.groups()
            if (miou := MIOU.search(rest)) and start.last_iter is not None:
                if kind == "Epoch":
                    at = int(k) * (start.iters_per_epoch or 0)
                else:
                    k = int(k)  # the iteration, or (older mmseg) the val loader's length
                    at = k if last_train <= k <= last_train + 1000 else last_train
                start.vals.append((at, round(float(miou.group(1)) * 100, 2)))
        if r := RESUMED_MMCV.search(msg):
            start.resumed_from = int(r.group(2))
    if start.last_iter is not None:
        start.kind = "trained"
    if start.loop == "iter":
        start.max_epochs = None
    start.vals = _dedupe_vals(start.vals)
    return start


def read_mmcv_json(log_json: Path) -> Start:
    """A start known only by its mmcv 0.x JSON log: no timestamps, no schedule length."""
    start = Start(name=log_json.name.split(".")[0])
    last_train = 0
    for line in log_json.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or "mode" not in rec:
            continue
        if rec["mode"] == "train":
            start.loop = "iter"
            start.last_iter = last_train = int(rec["iter"])
            start.first_iter = start.first_iter if start.first_iter is not None else last_train
            if "memory" in rec:
                start.memory = int(rec["memory"])
        elif rec["mode"] == "val" and "mIoU" in rec:
            it = int(rec["iter"])
            at = it if it >= last_train else last_train  # smaller: the val loader's length
            start.vals.append((at, round(float(rec["mIoU"]) * 100, 2)))
    if start.last_iter is not None:
        start.kind = "trained"
    start.vals = _dedupe_vals(start.vals)
    return start


def read_starts(work_dir: Path) -> tuple[str, list[Start]]:
    """Every start of a work dir, oldest first, and the format."""
    engine_logs = sorted(p for d in work_dir.iterdir() if d.is_dir() and TS_DIR.match(d.name)
                         for p in d.glob("*.log") if TS_DIR.match(p.name))
    if engine_logs:
        starts = [read_engine_text(p) for p in engine_logs]
        loop = next((s.loop for s in reversed(starts) if s.loop), "iter")
        return f"mmengine-{loop}", starts
    texts = sorted(p for p in work_dir.glob("*.log"))
    if texts:
        starts = [read_mmcv_text(p, p.with_name(p.name + ".json")) for p in texts]
        loop = next((s.loop for s in reversed(starts) if s.loop), "iter")
        return f"mmcv0x-{loop}", starts
    jsons = sorted(work_dir.glob("*.log.json"))
    return "mmcv0x-json", [read_mmcv_json(p) for p in jsons]


def lineage(starts: list[Start]) -> list[Start]:
    """The starts whose iterations are in the result: the last start that trained, and, while a
    start resumed, the trained start before it (a start from scratch replaces everything before)."""
    trained = [s for s in starts if s.kind == "trained"]
    if not trained:
        return []
    chain = [trained[-1]]
    while chain[0].resumed_from:
        earlier = [s for s in trained if s.name < chain[0].name]
        if not earlier:
            break
        chain.insert(0, earlier[-1])
    return chain


def expect(key: str, name: str | None) -> Expectation:
    work_dir = CORPUS / key
    fmt, starts = read_starts(work_dir)
    chain = lineage(starts)
    last = chain[-1] if chain else None
    curve: dict[int, float] = {}
    for s in chain:
        first = s.first_iter or 0
        # a later start wins from its first iteration on
        curve = {it: v for it, v in curve.items() if it < first}
        curve.update(dict(s.vals))
    vals = sorted(curve.items())
    max_iters = last.max_iters if last else None
    max_epochs = last.max_epochs if last and last.loop == "epoch" else None
    if last is None:
        finished = None
    elif last.loop == "epoch":
        finished = None if max_epochs is None or last.iters_per_epoch is None else (
            last.last_iter == max_epochs * last.iters_per_epoch or max_epochs in last.ended_epochs)
    else:
        finished = None if max_iters is None else last.last_iter == max_iters
    # a start's wall time: its first train record to its last training line
    spans = [s.end_t - s.first_train_t for s in chain if s.first_train_t is not None and s.end_t is not None]
    elapsed = float(sum(spans)) if chain and len(spans) == len(chain) else None  # no timestamps: unknown
    return Expectation(
        key=key, work_dir=work_dir, name=name, fmt=fmt, starts=starts,
        iter=last.last_iter if last else None, epoch=last.epoch if last else None,
        max_iters=max_iters, max_epochs=max_epochs, curve=vals,
        best_miou=max(v for _, v in vals) if vals else None, finished=finished,
        memory_mb=last.memory if last else None, elapsed_s=elapsed, counted=[s.name for s in chain])


# corpus folder -> expected run name (None: the work dir's folder is named `log`, as its author's
# --work-dir said; what a person calls it is not certain, so only "same in every view" is asserted)
RUNS: dict[str, str | None] = {
    "mmseg1x-dubai/DubaiDataset": "DubaiDataset",
    "mmseg1x-watermelon/Watermelon87_Semantic_Seg_Mask": "Watermelon87_Semantic_Seg_Mask",
    "mmseg1x-tutorial/tutorial": "tutorial",
    "mmseg1x-glomeruli/log": None,
    "mmseg1x-voc2012/log": None,
    "mmseg0x-potato/Potato_segmentation": "Potato_segmentation",
    "mmcv0x-enseg/autoencoder_L2": "autoencoder_L2",
    "mmcls0x-flower5/mobilenet-v2_flower5": "mobilenet-v2_flower5",
    "mmcls0x-resnet18/resnet18_8xb32_in1k": "resnet18_8xb32_in1k",
    "mmpretrain-fruits-resnet50/exp3_resnet50": "exp3_resnet50",
    "mmpretrain-fruits-resnet18/exp": "exp",
    "mmdet-drinks/rtmdet_tiny_1xb12-40e_drinks": "rtmdet_tiny_1xb12-40e_drinks",
    "mmdet-cat-testonly/rtmdet_tiny_1xb12-40e_cat": "rtmdet_tiny_1xb12-40e_cat",
    "mmdet2x-voc/log": None,
    "mmdet2x-balloon/log": None,
}


def all_expectations() -> list[Expectation]:
    return [expect(key, name) for key, name in RUNS.items()]


if __name__ == "__main__":  # a table to read by eye
    for e in all_expectations():
        kinds = " ".join(f"{s.name[-6:]}:{s.kind}{'' if s.resumed_from is None else 'r' + str(s.resumed_from)}"
                         for s in e.starts)
        print(f"{e.key}\n  {e.fmt} iter={e.iter} epoch={e.epoch} max_iters={e.max_iters} max_epochs={e.max_epochs}"
              f" finished={e.finished} mem={e.memory_mb} elapsed={e.elapsed_s} best={e.best_miou}"
              f" counted={e.counted}\n  curve={e.curve}\n  starts: {kinds}")
