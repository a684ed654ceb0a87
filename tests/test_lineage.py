"""Issue 21: a run's starts as a lineage (trained, resumed, restarted from scratch, replaced, test-only, aborted);
Elapsed, the report's wall time, the training time and the curve follow the starts that produced the result.

The runs are synthetic, laid out and worded as mmengine 1.x writes them (``<ts>/<ts>.log`` and
``<ts>/vis_data/scalars.json``; a ``Runner.test()`` start's ``<ts>/<ts>.json``); every expectation is
computed here from the timestamps and records written, not by prove-jobs' code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prove_jobs.cli import main
from prove_jobs.logs import read_run_log, training_time
from prove_jobs.logs.lineage import Facts, Start, classify, lineage_lines, wall_seconds

T0 = datetime(2026, 1, 1, 10, 0, 0)
RUN = ("V", "baseline", "cityscapes", "m")


def _stamp(at: datetime) -> str:
    return at.strftime("%Y/%m/%d %H:%M:%S")


@dataclass
class Writer:
    """One mmengine 1.x start: text lines (with timestamps) and the matching ``scalars.json`` records."""

    name: str
    text: list[str] = field(default_factory=list)
    scalars: list[str] = field(default_factory=list)

    def line(self, at: datetime, msg: str, level: str = "INFO") -> None:
        self.text.append(f"{_stamp(at)} - mmengine - {level} - {msg}\n")

    def header(self, at: datetime, resumed_from: int | None = None) -> None:
        self.line(at, "\n------------------------------------------------------------\nSystem environment:\n"
                      "    sys.platform: linux\n------------------------------------------------------------\n")
        self.line(at, "Config:\ncrop_size = (\n    512,\n    1024,\n)\n")
        if resumed_from is not None:
            self.line(at, f"Auto resumed from the latest checkpoint /w/iter_{resumed_from}.pth.")
            self.line(at, f"Load checkpoint from /w/iter_{resumed_from}.pth")
            self.line(at, f"resumed epoch: 0, iter: {resumed_from}")
        self.line(at, "Checkpoints will be saved to /w.")

    def train(self, at: datetime, it: int, total: int, seconds: float) -> None:
        self.line(at, f"Iter(train) [{it:>5}/{total}]  base_lr: 1.0000e-02 lr: 1.0000e-02  eta: 1:00:00  "
                      f"time: {seconds:.4f}  data_time: 0.0100  memory: 3000  loss: 0.5000  decode.loss_ce: 0.5000")
        self.scalars.append(f'{{"base_lr": 0.01, "lr": 0.01, "data_time": 0.01, "loss": 0.5, "decode.loss_ce": 0.5, '
                            f'"time": {seconds}, "iter": {it}, "memory": 3000, "step": {it}}}\n')

    def val(self, at: datetime, it: int, miou: float) -> None:
        self.line(at, f"Saving checkpoint at {it} iterations")
        self.line(at + timedelta(seconds=5), "Iter(val) [250/500]    eta: 0:00:05  time: 0.0200  data_time: 0.0020  "
                                             "memory: 1000")
        self.line(at + timedelta(seconds=10), f"Iter(val) [500/500]    aAcc: 90.0000  mIoU: {miou:.4f}  "
                                              "mAcc: 60.0000  data_time: 0.0020  time: 0.0200")
        self.scalars.append(f'{{"aAcc": 90.0, "mIoU": {miou}, "mAcc": 60.0, "data_time": 0.002, "time": 0.02, '
                            f'"step": {it}}}\n')

    def write(self, run_dir: Path, *, json_log: bool = True) -> Path:
        folder = run_dir / self.name
        folder.mkdir(parents=True)
        (folder / f"{self.name}.log").write_text("".join(self.text))
        if json_log and self.scalars:
            (folder / "vis_data").mkdir()
            (folder / "vis_data" / "scalars.json").write_text("".join(self.scalars))
        return folder


@dataclass
class Trained:
    """What a training start wrote, as this test knows it: its first train record's time and its last training
    line's (train record, checkpoint or val), and the (iteration, seconds per iteration) of its records."""

    name: str
    first_at: datetime
    last_at: datetime
    records: list[tuple[int, float]]
    vals: dict[int, float]

    @property
    def wall(self) -> float:
        return (self.last_at - self.first_at).total_seconds()


def training(run_dir: Path, start: datetime, first: int, last: int, *, total: int = 4000, every: int = 50,
             seconds: float = 0.5, val_every: int = 1000, miou: float = 40.0, resumed_from: int | None = None,
             after: list[tuple[timedelta, str, str]] | None = None, json_log: bool = True) -> Trained:
    """A start that trains ``first``..``last`` (a record every ``every`` iterations, ``seconds`` each) after a
    minute of set-up, with a val (and checkpoint) every ``val_every``; ``after``: (delay after its last training
    line, level, message) lines logged later (warnings)."""
    name = start.strftime("%Y%m%d_%H%M%S")
    w = Writer(name)
    w.header(start, resumed_from)
    at = first_at = start + timedelta(minutes=1)
    vals: dict[int, float] = {}
    records = []
    last_at = first_at
    for it in range(first, last + 1, every):
        at = first_at + timedelta(seconds=(it - first) * seconds)
        w.train(at, it, total, seconds)
        records.append((it, seconds))
        last_at = at
        if it % val_every == 0:
            vals[it] = miou + it / 1000
            w.val(at, it, vals[it])
            last_at = at + timedelta(seconds=10)
    for delay, level, msg in after or []:
        w.line(last_at + delay, msg, level)
    w.write(run_dir, json_log=json_log)
    return Trained(name, first_at, last_at, records, vals)


def aborted(run_dir: Path, start: datetime, resumed_from: int | None = None) -> str:
    """A start that died before its first train record (killed while loading its checkpoint)."""
    name = start.strftime("%Y%m%d_%H%M%S")
    w = Writer(name)
    w.header(start)
    if resumed_from is not None:
        w.line(start + timedelta(seconds=20), f"Load checkpoint from /w/iter_{resumed_from}.pth")
    w.text.append("Traceback (most recent call last):\n  File \"tools/train.py\", line 104, in <module>\n"
                  "RuntimeError: CUDA error: out of memory\n")
    w.write(run_dir)
    return name


def a_test_start(run_dir: Path, start: datetime, *, how: str = "test-json") -> str:
    """A ``Runner.test()`` start (tools/test.py): its text log and ``<ts>/<ts>.json`` of test metrics
    (``test-json``), also with the ``vis_data/config.py`` newer mmengine writes (``config-in-vis_data``, worded
    as mmdet 3.x's epoch loop); without
    that file (it also saved its visualisations in vis_data/) only the text says so: ``Iter(test)`` lines
    (``text-only``), or an epoch loop's ``Epoch(test)`` (``epoch-words``: mmdet 3.x)."""
    name = start.strftime("%Y%m%d_%H%M%S")
    loop = "Epoch" if how in ("epoch-words", "config-in-vis_data") else "Iter"
    w = Writer(name)
    w.header(start)
    w.line(start + timedelta(seconds=5), "Load checkpoint from /w/iter_4000.pth")
    for k in (50, 100):
        w.line(start + timedelta(seconds=5 + k), f"{loop}(test) [{k:>3}/100]    eta: 0:00:10  time: 0.1000  "
                                                 "data_time: 0.0100  memory: 1000")
    w.line(start + timedelta(seconds=120), f"{loop}(test) [100/100]    aAcc: 95.0000  mIoU: 77.7700  mAcc: 80.0000  "
                                           "data_time: 0.0100  time: 0.1000")
    folder = w.write(run_dir)
    if how in ("test-json", "config-in-vis_data"):
        (folder / f"{name}.json").write_text('{"aAcc": 95.0, "mIoU": 77.77, "mAcc": 80.0, "data_time": 0.01, '
                                             '"time": 0.1}\n')
    if how == "config-in-vis_data":
        (folder / "vis_data").mkdir()
        (folder / "vis_data" / "config.py").write_text("crop_size = (512, 1024)\n")
    elif how != "test-json":
        (folder / "vis_data" / "vis_image").mkdir(parents=True)
    return name


def training_seconds_of(*parts: tuple[Trained, int | None]) -> float:
    """mmengine's per-iteration times of the records that count: each part's records below the bound given."""
    total, prev = 0.0, 0
    for trained, below in parts:
        for it, seconds in trained.records:
            if below is None or it < below:
                total += seconds * (it - prev)
                prev = it
    return total


def run_dir_of(tmp_path: Path) -> Path:
    return tmp_path.joinpath(*RUN)


def status_json(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", str(run_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    return row  # type: ignore[no-any-return]


def status_text(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["status", str(run_dir)]) == 0
    return capsys.readouterr().out


def report_wall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[float, float]:
    assert main(["report", "--root", str(tmp_path), "--format", "json"]) == 0
    [time] = json.loads(capsys.readouterr().out)["times"]
    return time["wall_seconds"], time["seconds"]


def kinds(row: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(s["name"], s["kind"], s["counted"]) for s in row["starts"]]


def test_a_resumed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_dir_of(tmp_path)
    # crashed at 5100, after its checkpoint and val at 5000 (the checkpoint before that: 4000)
    first = training(run_dir, T0, 50, 5100, total=8000, miou=40.0)
    # resumed from 4000: trains 4050..8000 again past 4000, its val at 5000 replaces the first start's
    second = training(run_dir, T0 + timedelta(hours=3), 4050, 8000, total=8000, miou=50.0, resumed_from=4000)
    row = status_json(run_dir, capsys)
    assert row["iter"] == 8000 and row["state"] == "completed"
    assert row["starts"] == [
        {"name": first.name, "kind": "trained", "first_iter": 50, "last_iter": 5100, "resumed_from": None,
         "wall_s": first.wall, "counted": True, "replaced_by": None},
        {"name": second.name, "kind": "resumed", "first_iter": 4050, "last_iter": 8000, "resumed_from": 4000,
         "wall_s": second.wall, "counted": True, "replaced_by": None},
    ]
    assert row["elapsed_s"] == first.wall + second.wall
    curve = {it: miou for it, miou, _ in row["curve"]}
    assert curve == {**{it: m for it, m in first.vals.items() if it <= 4000}, **second.vals}
    assert curve[5000] == second.vals[5000]
    seconds = training_seconds_of((first, 4050), (second, None))
    assert training_time(run_dir).seconds == pytest.approx(seconds)
    assert report_wall(tmp_path, capsys) == (first.wall + second.wall, pytest.approx(seconds, abs=0.1))
    text = status_text(run_dir, capsys)
    assert f"  {first.name}  trained 0-5100 in 0:42:05\n" in text
    assert f"  {second.name}  resumed from 4000 to 8000 in 0:33:05 (result)\n" in text


def test_a_restart_from_scratch_after_a_failed_first_start(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The first start validated every 1000 and died at 3100; the retry (another config: a val every 2000)
    trained from scratch again. The first start's val at 3000 is not the run's: the curve, Elapsed, the report's
    wall and training time are the retry's alone."""
    run_dir = run_dir_of(tmp_path)
    failed = training(run_dir, T0, 50, 3100, miou=10.0)
    retry = training(run_dir, T0 + timedelta(hours=2), 50, 4000, val_every=2000, miou=30.0)
    row = status_json(run_dir, capsys)
    assert kinds(row) == [(failed.name, "trained", False), (retry.name, "restarted", True)]
    assert row["starts"][0]["replaced_by"] == retry.name
    assert [p[0] for p in row["curve"]] == [2000, 4000]  # not the failed start's 1000 and 3000
    assert {it: m for it, m, _ in row["curve"]} == retry.vals
    assert row["elapsed_s"] == retry.wall
    seconds = training_seconds_of((retry, None))
    assert training_time(run_dir).seconds == pytest.approx(seconds)
    assert [it for it, _ in training_time(run_dir).at_iter] == [2000, 4000]
    assert report_wall(tmp_path, capsys) == (retry.wall, pytest.approx(seconds, abs=0.1))
    text = status_text(run_dir, capsys)
    assert f"  {failed.name}  trained 0-3100 in 0:25:25, replaced by {retry.name}: not counted\n" in text
    assert f"  {retry.name}  restarted from scratch, 0-4000 in 0:33:05 (result)\n" in text


def test_a_restart_logged_at_another_interval_is_from_scratch(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The retry logs every 100 (the first start every 50) and writes no "resumed" line: its first record at 100 is
    its first log interval, a start from scratch (as mmdet2x-voc in the corpus), not a resume at 100."""
    run_dir = run_dir_of(tmp_path)
    failed = training(run_dir, T0, 50, 350)
    retry = training(run_dir, T0 + timedelta(hours=1), 100, 4000, every=100)
    row = status_json(run_dir, capsys)
    assert kinds(row) == [(failed.name, "trained", False), (retry.name, "restarted", True)]
    assert row["elapsed_s"] == retry.wall
    assert [p[0] for p in row["curve"]] == sorted(retry.vals)


def test_a_restart_still_training_shows_its_own_last_val(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A live retry at 2500: its last val is 2000, not the replaced start's 3000; its speed and ETA are its own."""
    run_dir = run_dir_of(tmp_path)
    training(run_dir, T0, 50, 3100, miou=10.0, seconds=2.0)
    retry = training(run_dir, T0 + timedelta(hours=2), 50, 2500, miou=30.0, seconds=0.5)
    row = status_json(run_dir, capsys)
    assert row["iter"] == 2500 and row["last_val_iter"] == 2000 and row["last_miou"] == retry.vals[2000]
    assert row["sec_per_iter"] == 0.5
    assert row["elapsed_s"] == retry.wall


def test_an_aborted_start_between_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_dir_of(tmp_path)
    first = training(run_dir, T0, 50, 2000)
    dead = aborted(run_dir, T0 + timedelta(hours=1), resumed_from=2000)
    last = training(run_dir, T0 + timedelta(hours=5), 2050, 4000, resumed_from=2000)
    row = status_json(run_dir, capsys)
    assert kinds(row) == [(first.name, "trained", True), (dead, "aborted", False), (last.name, "resumed", True)]
    assert row["starts"][1]["first_iter"] is None and row["starts"][1]["wall_s"] is None
    assert row["elapsed_s"] == first.wall + last.wall
    assert f"{dead}  aborted (no training record): not counted" in status_text(run_dir, capsys)


@pytest.mark.parametrize("how", ["test-json", "config-in-vis_data", "text-only", "epoch-words"])
def test_a_test_only_start_days_later(tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    run_dir = run_dir_of(tmp_path)
    trained = training(run_dir, T0, 50, 4000)
    tested = a_test_start(run_dir, T0 + timedelta(days=3), how=how)
    row = status_json(run_dir, capsys)
    assert row["state"] == "completed" and row["iter"] == 4000
    assert kinds(row) == [(trained.name, "trained", True), (tested, "test-only", False)]
    assert row["elapsed_s"] == trained.wall
    assert {it: m for it, m, _ in row["curve"]} == trained.vals  # the test's 77.77 is not a val
    assert report_wall(tmp_path, capsys)[0] == trained.wall
    assert f"{tested}  test-only: not counted" in status_text(run_dir, capsys)


def test_a_val_only_start_is_test_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``Runner.val()`` start (a checkpoint evaluated again): its val metrics at step 0 in vis_data/scalars.json,
    no train record. Not training: test-only, not on the curve, and no warning about a val without an iteration."""
    run_dir = run_dir_of(tmp_path)
    trained = training(run_dir, T0, 50, 4000)
    name = (T0 + timedelta(days=1)).strftime("%Y%m%d_%H%M%S")
    w = Writer(name)
    w.header(T0 + timedelta(days=1))
    w.line(T0 + timedelta(days=1, seconds=30), "Iter(val) [500/500]    aAcc: 95.0000  mIoU: 70.0000  mAcc: 80.0000  "
                                               "data_time: 0.0100  time: 0.1000")
    w.scalars.append('{"aAcc": 95.0, "mIoU": 70.0, "mAcc": 80.0, "data_time": 0.01, "time": 0.1, "step": 0}\n')
    w.write(run_dir)
    row = status_json(run_dir, capsys)
    assert kinds(row) == [(trained.name, "trained", True), (name, "test-only", False)]
    assert {it: m for it, m, _ in row["curve"]} == trained.vals and row["notes"] == []
    assert row["elapsed_s"] == trained.wall


def test_warnings_after_training_do_not_stretch_the_wall_time(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A start whose last training line (its last val) is followed by warnings an hour and 40 hours later (the
    process lingering, or another process logging into its file): the wall time ends at the last val."""
    run_dir = run_dir_of(tmp_path)
    trained = training(run_dir, T0, 50, 4000, after=[
        (timedelta(hours=1), "WARNING", "The model and loaded state dict do not match exactly"),
        (timedelta(hours=40), "WARNING", "Dataset has no metainfo. ``dataset_meta`` in visualizer will be None."),
    ])
    row = status_json(run_dir, capsys)
    assert row["elapsed_s"] == trained.wall == (4000 - 50) * 0.5 + 10  # to its last val: 0:33:05
    assert report_wall(tmp_path, capsys)[0] == trained.wall


def test_warnings_after_training_in_a_json_run_with_a_big_text_log(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same where the text log is read at its two ends only (it has a JSON beside it, and is large)."""
    from prove_jobs.logs.runlog import LIMITS

    monkeypatch.setattr(LIMITS, "sparse_min_bytes", 1 << 10)
    monkeypatch.setattr(LIMITS, "window_bytes", 1 << 12)
    run_dir = run_dir_of(tmp_path)
    trained = training(run_dir, T0, 50, 4000, after=[(timedelta(hours=40), "WARNING", "late")])
    assert status_json(run_dir, capsys)["elapsed_s"] == trained.wall


def test_a_console_capture_ends_at_its_last_training_line(tmp_path: Path) -> None:
    """A job's stdout (no work dir logs read): the same rule."""
    from prove_jobs.logs import read_text_log

    run_dir = run_dir_of(tmp_path)
    trained = training(run_dir, T0, 50, 4000, after=[(timedelta(hours=40), "WARNING", "late")])
    log = read_text_log(run_dir / trained.name / f"{trained.name}.log")
    assert log.wall_s == trained.wall


def test_the_lineage_of_many_starts_and_the_wall_time() -> None:
    """Without files: resumed, restarted, replaced (twice over), aborted, test-only."""
    def facts(name: str, first: int | None, last: int | None, *, resumed_from: int | None = None,
              tested: bool = False, span: tuple[float, float] | None = (0.0, 10.0)) -> Facts:
        return Facts(name, first, last, resumed_from, *(span or (None, None)), tested)

    lineage = classify([
        facts("a", 50, 3000),  # replaced by c (a restart from scratch)
        facts("b", None, None),  # aborted
        facts("c", 50, 2500, span=(100.0, 150.0)),  # kept below 2050 (d resumed at 2000)
        facts("d", 2050, 2100, resumed_from=2000),  # replaced by e (resumed from 2000 again)
        facts("e", 2050, 4000, resumed_from=2000, span=(200.0, 260.0)),
        facts("f", None, None, tested=True, span=None),
    ])
    assert [(s.name, s.kind, s.counted, s.replaced_by) for s in lineage] == [
        ("a", "trained", False, "c"), ("b", "aborted", False, None), ("c", "restarted", True, None),
        ("d", "resumed", False, "e"), ("e", "resumed", True, None), ("f", "test-only", False, None)]
    assert wall_seconds(lineage) == 50.0 + 60.0
    assert lineage_lines(lineage) == [
        "Starts (Elapsed is the sum of the counted ones):",
        "  a  trained 0-3000 in 0:00:10, replaced by c: not counted",
        "  b  aborted (no training record): not counted",
        "  c  restarted from scratch, 0-2500 in 0:00:50",
        "  d  resumed from 2000 to 2100 in 0:00:10, replaced by e: not counted",
        "  e  resumed from 2000 to 4000 in 0:01:00 (result)",
        "  f  test-only: not counted"]
    assert lineage_lines(lineage[:2], live=True)[-1] == "  b  starting (no training record yet)"
    assert Start.from_row(lineage[3].to_row()) == lineage[3]
    assert wall_seconds(classify([facts("a", 50, 100, span=None)])) is None  # a counted start without times
    assert wall_seconds(classify([facts("a", None, None)])) is None


def test_the_lineage_survives_the_cache_file(tmp_path: Path) -> None:
    from prove_jobs.logs import LogCache

    run_dir = run_dir_of(tmp_path)
    training(run_dir, T0, 50, 3100)
    training(run_dir, T0 + timedelta(hours=2), 50, 4000)
    cache = LogCache()
    first = cache.read_run_log(run_dir)
    cache.save(tmp_path / "cache" / "logs.marshal")
    again = LogCache.load(tmp_path / "cache" / "logs.marshal").read_run_log(run_dir)
    assert again.lineage == first.lineage and [s.counted for s in first.lineage] == [False, True]


# --- formats the i21-formats branch reads: the lineage logic is the same ----------------------------------

EPOCH_T0 = datetime(2026, 2, 1, 8, 0, 0)


def _epoch_start(run_dir: Path, start: datetime, epochs: range, *, per_epoch: int = 100, every: int = 50,
                 resumed_epoch: int | None = None) -> tuple[str, datetime, datetime]:
    """An EpochBasedTrainLoop start as mmengine words it: ``Epoch(train)  [e][ i/n]``, ``Epoch(val) [e][k/k]``."""
    name = start.strftime("%Y%m%d_%H%M%S")
    w = Writer(name)
    w.header(start)
    if resumed_epoch is not None:
        w.line(start, f"Load checkpoint from /w/epoch_{resumed_epoch}.pth")
        w.line(start, f"resumed epoch: {resumed_epoch}, iter: {resumed_epoch * per_epoch}")
    at = first_at = start + timedelta(minutes=1)
    for e in epochs:
        for i in range(every, per_epoch + 1, every):
            w.line(at, f"Epoch(train)  [{e}][{i:>3}/{per_epoch}]  lr: 1.0000e-02  eta: 0:10:00  time: 0.5000  "
                       "data_time: 0.0100  memory: 3000  loss: 0.5000")
            at += timedelta(seconds=every * 0.5)
        w.line(at, f"Saving checkpoint at {e} epochs")
        w.line(at, f"Epoch(val) [{e}][10/10]    aAcc: 90.0000  mIoU: {40 + e:.4f}  mAcc: 60.0000  data_time: 0.0100  "
                   "time: 0.2000")
    w.write(run_dir, json_log=False)
    return name, first_at, at


def test_an_epoch_loop_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_dir_of(tmp_path)
    a, a_first, a_last = _epoch_start(run_dir, EPOCH_T0, range(1, 4))  # epochs 1-3, then killed
    b, b_first, b_last = _epoch_start(run_dir, EPOCH_T0 + timedelta(hours=1), range(3, 6), resumed_epoch=2)
    row = status_json(run_dir, capsys)
    assert kinds(row) == [(a, "trained", True), (b, "resumed", True)]
    assert row["starts"][1]["resumed_from"] == 200  # the global iteration, as the line says
    assert row["elapsed_s"] == (a_last - a_first).total_seconds() + (b_last - b_first).total_seconds()


def _legacy_start(run_dir: Path, start: datetime, first: int, last: int, *, resumed_from: int | None = None,
                  every: int = 50, val_every: int = 1000, total: int = 4000) -> tuple[str, float]:
    """An mmseg 0.x start at the top of the work dir: ``<ts>.log`` and ``<ts>.log.json``."""
    name = start.strftime("%Y%m%d_%H%M%S")

    def line(at: datetime, msg: str) -> str:
        return f"{at.strftime('%Y-%m-%d %H:%M:%S')},123 - mmseg - INFO - {msg}\n"

    text = [line(start, "Environment info:\n------------------------------------------------------------\n"),
            line(start, "Distributed training: True")]
    js = [json.dumps({"env_info": "sys.platform: linux", "seed": 0, "exp_name": "x.py", "mmseg_version": "0.30.0"})
          + "\n"]
    if resumed_from is not None:
        text += [line(start, f"load checkpoint from local path: /w/iter_{resumed_from}.pth"),
                 line(start, f"resumed from epoch: 1, iter {resumed_from}")]
    first_at = start + timedelta(minutes=1)
    at = first_at
    for it in range(first, last + 1, every):
        at = first_at + timedelta(seconds=(it - first) * 0.5)
        text.append(line(at, f"Iter [{it}/{total}]\tlr: 9.999e-03, eta: 0:30:00, time: 0.500, data_time: 0.010, "
                             "memory: 3000, decode.loss_seg: 0.5000, decode.acc_seg: 80.0000, loss: 0.5000"))
        js.append(json.dumps({"mode": "train", "epoch": 1, "iter": it, "lr": 0.01, "memory": 3000,
                              "data_time": 0.01, "decode.loss_seg": 0.5, "decode.acc_seg": 80.0, "loss": 0.5,
                              "time": 0.5}) + "\n")
        if it % val_every == 0:
            text.append(line(at, f"Saving checkpoint at {it} iterations"))
            text.append(line(at + timedelta(seconds=10), "Iter(val) [500]\taAcc: 0.9000, mIoU: 0.5000, mAcc: 0.6000"))
            js.append(json.dumps({"mode": "val", "epoch": 1, "iter": 500, "lr": 0.01, "aAcc": 0.9, "mIoU": 0.5,
                                  "mAcc": 0.6}) + "\n")
            at += timedelta(seconds=10)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"{name}.log").write_text("".join(text))
    (run_dir / f"{name}.log.json").write_text("".join(js))
    return name, (at - first_at).total_seconds()


def test_an_mmseg_0x_run_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_dir_of(tmp_path)
    a, a_wall = _legacy_start(run_dir, T0, 50, 2100)
    b, b_wall = _legacy_start(run_dir, T0 + timedelta(hours=2), 2050, 4000, resumed_from=2000)
    (run_dir / "latest.pth").write_bytes(b"")
    log = read_run_log(run_dir)
    assert [(s.name[:15], s.kind, s.counted, s.resumed_from) for s in log.lineage] == [
        (a, "trained", True, None), (b, "resumed", True, 2000)]  # named <ts>.log.json, or <ts>
    assert log.wall_s == a_wall + b_wall
    row = status_json(run_dir, capsys)
    assert row["elapsed_s"] == a_wall + b_wall



def test_a_test_folder_with_its_config_is_test_only(tmp_path: Path) -> None:
    """Newer mmengine's Runner.test() writes vis_data/config.py beside <ts>/<ts>.json (mmdet-drinks in the corpus):
    the folder itself says test-only, as one without vis_data/ does."""
    from prove_jobs.logs.layout import start_files

    for name, with_config in (("20260101_100000", True), ("20260101_110000", False)):
        folder = tmp_path / name
        (folder / "vis_data").mkdir(parents=True)
        if with_config:
            (folder / "vis_data" / "config.py").write_text("crop_size = (512, 1024)\n")
        (folder / f"{name}.json").write_text('{"aAcc": 95.0, "mIoU": 77.77, "mAcc": 80.0}\n')
        (folder / f"{name}.log").write_text(f"{_stamp(T0)} - mmengine - INFO - Iter(test) [500/500]  mIoU: 77.77\n")
        assert start_files(str(folder), name) is None
    training_dir = tmp_path / "20260101_120000"
    (training_dir / "vis_data").mkdir(parents=True)
    (training_dir / "vis_data" / "config.py").write_text("crop_size = (512, 1024)\n")
    assert start_files(str(training_dir), training_dir.name) is not None  # a training start's folder
