"""prove_jobs.logs.times: how long a run trained, from its JSON logs or its text logs alone, and its memo."""

from __future__ import annotations

import marshal
import shutil
from pathlib import Path

import pytest
from conftest import bench_module, log_reads

from prove_jobs.logs import LogCache, TrainingTime, read_run_log, training_time
from prove_jobs.logs import times as times_module
from prove_jobs.report import training_seconds

# torch.jit deprecation noise from mmengine's imports, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LOG = "2026/02/03 10:00:00 - mmengine - INFO - "


def train_json(i: int, t: float, loss: str = "0.5") -> str:
    """A train record as LoggerHook writes it (mmengine 0.10.7's key order)."""
    return (f'{{"lr": 0.01, "data_time": 0.01, "loss": {loss}, "decode.loss_ce": 0.3, "time": {t}, "iter": {i}, '
            f'"step": {i}}}\n')


def train_text(i: int, t: float, total: int = 20000, loss: str = "0.5000") -> str:
    return (f"{LOG}Iter(train) [{i:5d}/{total}]  base_lr: 1.0000e-02 lr: 1.0000e-02  eta: 1 day, 2:03:04  "
            f"time: {t:.4f}  data_time: 0.0123  memory: 9000  loss: {loss}  decode.loss_ce: 0.3000\n")


def write_start(work: Path, ts: str, records: list[tuple[str, int, float]], *, json: bool = True,
                text: bool = True, step: int | None = None) -> None:
    """One training start in both formats: ("train", iteration, seconds per iteration) and ("val", iteration, mIoU);
    a val comes after its train record and the checkpoint, as mmengine writes them. ``step``: every val's
    JSON ``step`` (0 with log_metric_by_epoch=True) instead of its iteration."""
    js, lines = [], [f"{LOG}Config:\nwork_dir = './work_dirs/{ts}'\n\n"]
    for kind, i, value in records:
        if kind == "train":
            js.append(train_json(i, value))
            lines.append(train_text(i, value))
        else:
            js.append(f'{{"aAcc": 90.0, "mIoU": {value}, "mAcc": 60.0, "data_time": 0.01, "time": 0.2, '
                      f'"step": {i if step is None else step}}}\n')
            lines.append(f"{LOG}Saving checkpoint at {i} iterations\n")
            lines.append(f"{LOG}Iter(val) [250/500]    eta: 0:00:20  time: 0.1500  data_time: 0.0020  memory: 3000\n")
            lines.append(f"{LOG}Iter(val) [500/500]    aAcc: 90.0000  mIoU: {value:.4f}  mAcc: 60.0000  "
                         "data_time: 0.0100  time: 0.2000\n")
    (work / ts).mkdir(parents=True)
    if json:
        (work / ts / "vis_data").mkdir()
        (work / ts / "vis_data" / "scalars.json").write_text("".join(js))
    if text:
        (work / ts / f"{ts}.log").write_text("".join(lines))


def trains(first: int, last: int, seconds: float, every: int = 50) -> list[tuple[str, int, float]]:
    return [("train", i, seconds) for i in range(first, last + 1, every)]


def without_vis_data(work: Path, dest: Path) -> Path:
    shutil.copytree(work, dest, ignore=shutil.ignore_patterns("vis_data"))
    return dest


def test_text_only_run_has_the_seconds_of_its_json(tmp_path: Path) -> None:
    work = tmp_path / "run"
    write_start(work, "20260203_100000", [*trains(50, 200, 0.4567), ("val", 200, 40.0), *trains(250, 300, 0.4571)])
    write_start(work, "20260203_120000", [*trains(250, 400, 0.5123), ("val", 400, 45.0)])  # resumed from 200
    text_only = without_vis_data(work, tmp_path / "text_only")
    assert training_time(text_only) == training_time(work)  # 4-decimal times: the text says all the JSON does
    assert training_seconds(text_only) == training_seconds(work) == pytest.approx(200 * 0.4567 + 200 * 0.5123)


def test_generated_run_without_vis_data(tmp_path: Path) -> None:
    bench, old = bench_module(), bench_module("bench_times")
    for seed in (1, 10):  # 10: still training
        work = tmp_path / f"run{seed}"
        bench.write_run(work, seed)
        got = training_time(work)
        assert got.seconds is not None and got.seconds == old.old_training_seconds(work)
        assert [it for it, _ in got.at_iter] == [p.iter for p in read_run_log(work).curve]
        if seed == 1:
            assert got.at_iter[-1] == (bench.MAX_ITERS, got.seconds)  # the last val is at the last record
        text_only = training_time(without_vis_data(work, tmp_path / f"text{seed}"))
        # mmengine prints `time` with 4 decimals: at most 0.00005 s per iteration off
        assert text_only.seconds == pytest.approx(got.seconds, abs=5e-5 * bench.MAX_ITERS)
        assert [it for it, _ in text_only.at_iter] == [it for it, _ in got.at_iter]


@pytest.mark.parametrize("formats", [(True, False), (False, True), (False, True, True, False)])
def test_resume_counts_repeated_iterations_once(tmp_path: Path, formats: tuple[bool, ...]) -> None:
    """JSON only, text only, and a text-only first start with a JSON-only resumed one."""
    json_first, text_first = formats[0], formats[1]
    json_second, text_second = (formats[2], formats[3]) if len(formats) == 4 else formats
    write_start(tmp_path, "20260101_000000", trains(50, 300, 1.0), json=json_first, text=text_first)
    write_start(tmp_path, "20260101_010000", trains(250, 400, 2.0), json=json_second, text=text_second)
    # 1..200 from the first start (1 s each), 201..400 from the resumed one (2 s each)
    assert training_time(tmp_path).seconds == training_seconds(tmp_path) == 200 * 1.0 + 200 * 2.0
    assert training_time(tmp_path / "nothing") == TrainingTime(None, ())
    assert training_seconds(tmp_path / "nothing") is None


def test_at_iter_is_the_training_time_to_each_val(tmp_path: Path) -> None:
    one = tmp_path / "one"
    write_start(one, "20260101_000000", [*trains(50, 200, 0.5), ("val", 200, 40.0), *trains(250, 400, 0.5),
                                         ("val", 400, 45.0)])
    assert training_time(one) == TrainingTime(200.0, ((200, 100.0), (400, 200.0)))

    # Validated at 200 and 300, died; resumed from the checkpoint at 200 (the one at 300 was lost).
    # The val at 300 was undone with the records after 200: it is left out.
    resumed = tmp_path / "resumed"
    write_start(resumed, "20260101_000000", [*trains(50, 200, 0.5), ("val", 200, 40.0), *trains(250, 300, 0.5),
                                             ("val", 300, 42.0), *trains(350, 350, 0.5)])
    write_start(resumed, "20260101_010000", [*trains(250, 400, 1.0), ("val", 400, 45.0)])
    assert training_time(resumed) == TrainingTime(300.0, ((200, 100.0), (400, 300.0)))
    # issue 21: the curve follows the lineage too: the val at 300 is of a model the result does not descend from
    assert [p.iter for p in read_run_log(resumed).curve] == [200, 400]


def test_at_iter_with_val_steps_that_are_not_iterations(tmp_path: Path) -> None:
    # log_metric_by_epoch=True: every val's `step` is 0. Logged every 3 iterations, validated every 4:
    # only the text log's "Saving checkpoint at 4 iterations" says 4; inside 3..6 the 6's `time` counts.
    records = [("train", 3, 1.0), ("val", 4, 40.0), ("train", 6, 2.0), ("val", 8, 42.0), ("train", 9, 3.0),
               ("train", 12, 4.0), ("val", 12, 44.0)]
    write_start(tmp_path / "both", "20260101_000000", records, step=0)
    expected = TrainingTime(30.0, ((4, 3.0 + 2.0), (8, 3.0 + 6.0 + 3.0 * 2), (12, 30.0)))
    assert training_time(tmp_path / "both") == expected
    assert [p.iter for p in read_run_log(tmp_path / "both").curve] == [4, 8, 12]
    assert training_time(without_vis_data(tmp_path / "both", tmp_path / "text")) == expected
    # Without the text log the train record before each val is the best there is (as for the curve).
    write_start(tmp_path / "json", "20260101_000000", records, step=0, text=False)
    assert training_time(tmp_path / "json") == TrainingTime(30.0, ((3, 3.0), (6, 9.0), (12, 30.0)))


PLAIN = "".join(train_json(i, 0.25) for i in range(50, 1001, 50))
JSON_CASES = {
    "nan loss": train_json(1050, 0.5, loss="NaN"),  # counted: the time is fine
    "nan time": '{"lr": 0.01, "loss": 0.5, "time": NaN, "iter": 1050, "step": 1050}\n',
    "other key order": '{"iter": 1050, "loss": 0.5, "time": 0.5, "step": 1050}\n',
    "time a string": '{"lr": 0.01, "loss": 0.5, "time": "0.5", "iter": 1050, "step": 1050}\n',
    "step, no iter": '{"lr": 0.01, "loss": 0.5, "time": 0.5, "step": 1050}\n',
    "no loss": '{"lr": 0.01, "data_time": 0.01, "time": 0.5, "iter": 1050, "step": 1050}\n',
    "torn line": '{"lr": 0.01, "loss": 0.5, "ti' + train_json(1050, 0.5),
    "garbage": "not json at all\n" + train_json(1050, 0.5),
    "blank line": "\n" + train_json(1050, 0.5),
    "val": '{"aAcc": 90.0, "mIoU": 40.0, "mAcc": 60.0, "data_time": 0.01, "time": 0.2, "step": 1000}\n',
    "last line whole, no newline": train_json(1050, 0.5).rstrip("\n"),
    "last line cut off": train_json(1050, 0.5)[:40],
}


JSON_UNFIT = {"other key order", "time a string", "step, no iter", "no loss", "torn line", "garbage", "blank line"}


@pytest.mark.parametrize("case", JSON_CASES)
def test_json_scan_equals_json_loads_of_every_line(tmp_path: Path, case: str) -> None:
    body = PLAIN + JSON_CASES[case] + ("" if case.startswith("last line") else PLAIN.replace('": 0.25', '": 0.75'))
    old = bench_module("bench_times")
    (tmp_path / "20260101_000000" / "vis_data").mkdir(parents=True)
    (tmp_path / "20260101_000000" / "vis_data" / "scalars.json").write_text(body)
    assert training_time(tmp_path).seconds == old.old_training_seconds(tmp_path)
    data = body.encode()
    fast, by_line = times_module.json_times(data), times_module.json_times_by_line(data)
    assert (fast.iters, fast.times, fast.vals) == (by_line.iters, by_line.times, by_line.vals)
    # Lines the scan does not read as mmengine writes them: every line is json.loads-ed.
    assert fast.how == ("line by line" if case in JSON_UNFIT else "scan")


TEXT_CASES = {
    "nan loss": train_text(1050, 0.5, loss="nan"),
    "no time (no IterTimerHook)": f"{LOG}Iter(train) [ 1050/20000]  lr: 1.0000e-02  loss: 0.5000\n",
    "nan time": train_text(1050, 0.5).replace("time: 0.5000", "time: nan"),
    "colours": train_text(1050, 0.5).replace("INFO", "\x1b[32mINFO\x1b[0m"),
    "last line cut off": train_text(1050, 0.5)[:60],
}


@pytest.mark.parametrize("case", TEXT_CASES)
def test_text_scan_equals_reading_every_line(case: str) -> None:
    plain = "".join(train_text(i, 0.25) for i in range(50, 1001, 50))
    data = (plain + TEXT_CASES[case]).encode()
    fast, by_line = times_module.text_times(data), times_module.text_times_by_line(data[: data.rfind(b"\n") + 1])
    assert (fast.iters, fast.times, fast.vals) == (by_line.iters, by_line.times, by_line.vals)
    assert fast.iters[:20] == list(range(50, 1001, 50))
    assert fast.how == ("line by line" if case in {"no time (no IterTimerHook)", "nan time"} else "scan")


def test_warm_memo_reads_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bench = bench_module()
    work = tmp_path / "run"
    bench.write_run(work, 10)  # still training
    caplog.set_level("DEBUG", logger="prove_jobs.logs")
    cache = LogCache()
    first = cache.training_time(work)
    assert [how for _, how in log_reads(caplog)] == ["times: json scan"] * 3  # each start's scalars.json, no more
    caplog.clear()
    assert cache.training_time(work) == first
    assert log_reads(caplog) == []  # unchanged: nothing read
    bench.append_lines(work, 10, 50)
    after = cache.training_time(work)
    assert log_reads(caplog) != [] and after == training_time(work)
    assert after.seconds is not None and first.seconds is not None and after.seconds > first.seconds
    caplog.clear()
    write_start(work, "20990101_000000", trains(80050, 80100, 1.0))  # a new start
    assert cache.training_time(work) == training_time(work) != after
    assert log_reads(caplog) != []


def test_training_time_cache_file_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bench = bench_module()
    works = [tmp_path / f"run{seed}" for seed in (1, 2)]
    for seed, work in enumerate(works, start=1):
        bench.write_run(work, seed)
    cache_file = tmp_path / "cache" / "logs.marshal"
    first = LogCache()
    expected = [first.training_time(w) for w in works]
    logs = [first.read_run_log(w) for w in works]
    first.save(cache_file)

    caplog.set_level("DEBUG", logger="prove_jobs.logs")
    loaded = LogCache.load(cache_file)
    assert [loaded.training_time(w) for w in works] == expected
    assert [loaded.read_run_log(w) for w in works] == logs
    assert log_reads(caplog) == []  # both memos came with the file
    LogCache.load(cache_file).save(cache_file)  # a status that never timed a run keeps the times as they were
    assert [LogCache.load(cache_file).training_time(w) for w in works] == expected
    assert log_reads(caplog) == []

    scope, body = cache_file.read_bytes().split(b"\n", 1)  # a line naming the scope, then marshal
    form, blobs, runs, times, seen = marshal.loads(body)
    rows = marshal.loads(times)
    damaged = ((rows[0][0], rows[0][1], (1.0, (2000,), ("x",))), rows[1])  # one entry of the wrong types
    for body, reread in [((form, blobs, runs, marshal.dumps(damaged), seen), 1),  # that run is timed again
                         ((form, blobs, runs, b"garbage", seen), 2),  # every run is
                         ((form, blobs, runs, None, seen), 2),
                         ((form, blobs, runs, times), 2)]:  # the format before: cold
        cache_file.write_bytes(scope + b"\n" + marshal.dumps(body))
        caplog.clear()
        assert [LogCache.load(cache_file).training_time(w) for w in works] == expected
        assert len(log_reads(caplog)) == 3 * reread  # three starts' scalars.json a run


@pytest.mark.slow
def test_real_mmengine_runs_from_text_logs(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="real mmengine logs need the train extra (torch)")
    pytest.importorskip("mmengine", reason="real mmengine logs need the train extra (mmengine)")
    import mmengine_logs as ml

    ml.run_training(tmp_path / "by_epoch", max_iters=12, val_interval=4, log_interval=3, checkpoint_interval=4,
                    log_metric_by_epoch=True)
    ml.make_resumed_run(tmp_path / "resumed")
    for name in ("by_epoch", "resumed"):
        work = tmp_path / name
        got = training_time(work)
        assert got.seconds is not None and got.seconds == bench_module("bench_times").old_training_seconds(work)
        assert [it for it, _ in got.at_iter] == [p.iter for p in read_run_log(work).curve]
        text = training_time(without_vis_data(work, tmp_path / f"{name}_text"))
        assert text.seconds == pytest.approx(got.seconds, abs=5e-5 * 16)
        assert [it for it, _ in text.at_iter] == [it for it, _ in got.at_iter]
