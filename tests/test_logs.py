"""prove_jobs.logs on REAL mmengine output (tiny Runner runs) and on hand-made broken files."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from conftest import log_reads

from prove_jobs.logs import (
    LIMITS,
    LogCache,
    RunLog,
    ValPoint,
    parse_json_chunk,
    parse_text_chunk,
    read_run_log,
    read_text_log,
)


def log_assembled(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The runs put together again from their starts so far (`prove-jobs -vv`)."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("assembled ")]

FIXTURES = Path(__file__).parent / "fixtures" / "logs"

# torch.jit deprecation noise from mmengine's imports, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ---------------------------------------------------------------------------------------------
# Real mmengine logs (session-scoped: the runs take a few seconds in all)


def _mmengine_logs() -> ModuleType:
    pytest.importorskip("torch", reason="real mmengine logs need the train extra (torch)")
    pytest.importorskip("mmengine", reason="real mmengine logs need the train extra (mmengine)")
    import mmengine_logs

    return mmengine_logs


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ml = _mmengine_logs()
    root = tmp_path_factory.mktemp("mmengine_runs")
    runs = {name: root / name for name in ("by_iter", "by_epoch", "resumed")}
    # log_metric_by_epoch=False: val `step` is the iteration. Then a Runner.test() in the same work
    # dir, as mmseg's tools/test.py does by default: <ts>/<ts>.json outside vis_data.
    ml.run_training(runs["by_iter"], max_iters=12, val_interval=4, log_interval=2, checkpoint_interval=4)
    ml.run_test(runs["by_iter"], metric_offset=7.0)
    # log_metric_by_epoch=True: val `step` is 0; with a log interval of 3 the train record before
    # the val at 4 is iteration 3, only the text log's "Saving checkpoint at 4 iterations" says 4.
    ml.run_training(
        runs["by_epoch"], max_iters=12, val_interval=4, log_interval=3, checkpoint_interval=4, log_metric_by_epoch=True
    )
    ml.make_resumed_run(runs["resumed"])
    return runs


@pytest.fixture(scope="session")
def console_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ml = _mmengine_logs()
    root = tmp_path_factory.mktemp("console")
    stdout = root / "job.out"
    rc = ml.run_console_subprocess(root / "wd", stdout, force_color=True)
    assert rc == 0, stdout.read_text(errors="replace")[-2000:]
    return root / "wd", stdout


def _ts_dirs(work_dir: Path) -> list[Path]:
    return sorted(p for p in work_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())


def _scalars(ts_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (ts_dir / "vis_data" / "scalars.json").read_text().splitlines()]


def _expected_curve(iters: list[int], offset: float = 0.0, first_eval: int = 1) -> list[ValPoint]:
    ml = _mmengine_logs()
    out = []
    for k, it in enumerate(iters, start=first_eval):
        m = ml.expected_metrics(k, offset)
        out.append(ValPoint(it, m["mIoU"], m["aAcc"], m["mAcc"]))
    return out


@pytest.mark.slow
def test_real_by_iter_curve_is_what_the_metric_produced(real_runs: dict[str, Path]) -> None:
    log = read_run_log(real_runs["by_iter"])
    assert list(log.curve) == _expected_curve([4, 8, 12])
    assert log.last_iter == 12
    assert log.max_iters == 12
    assert log.warnings == ()
    assert log.seconds_per_iter is not None and 0 < log.seconds_per_iter < 5
    assert log.first_time is not None and log.last_time is not None
    assert log.first_time <= log.last_time
    assert abs(log.last_time - time.time()) < 600  # the text timestamps are local time, parsed as such


@pytest.mark.slow
def test_real_test_run_json_is_not_training(real_runs: dict[str, Path]) -> None:
    work = real_runs["by_iter"]
    test_jsons = [d / f"{d.name}.json" for d in _ts_dirs(work) if (d / f"{d.name}.json").is_file()]
    assert len(test_jsons) == 1, "the fixture must contain a Runner.test() output"
    assert "mIoU" in json.loads(test_jsons[0].read_text())
    log = read_run_log(work)
    assert log.starts == 1  # two timestamp dirs, one of them a test run
    assert all(p.miou is not None and p.miou < 47 for p in log.curve)  # test metrics (offset 7) are 49.25


@pytest.mark.slow
def test_real_log_metric_by_epoch_uses_training_iterations(real_runs: dict[str, Path]) -> None:
    (ts,) = _ts_dirs(real_runs["by_epoch"])
    vals = [r for r in _scalars(ts) if "mIoU" in r]
    assert [r["step"] for r in vals] == [0, 0, 0]  # the trap: the step is not the iteration
    log = read_run_log(real_runs["by_epoch"])
    assert list(log.curve) == _expected_curve([4, 8, 12])
    assert log.last_iter == 12


@pytest.mark.slow
def test_real_log_metric_by_epoch_without_text_log_falls_back_to_train_records(
    real_runs: dict[str, Path], tmp_path: Path
) -> None:
    work = tmp_path / "wd"
    shutil.copytree(real_runs["by_epoch"], work)
    for ts in _ts_dirs(work):
        (ts / f"{ts.name}.log").unlink()
    log = read_run_log(work)
    # log interval 3: the train records before the vals at 4, 8, 12 are 3, 6, 12: the best the JSON alone knows.
    assert [p.iter for p in log.curve] == [3, 6, 12]
    assert log.first_time is None
    assert log.last_time is not None  # from the JSON's mtime


@pytest.mark.slow
def test_real_resume_later_start_wins(real_runs: dict[str, Path]) -> None:
    work = real_runs["resumed"]
    dirs = _ts_dirs(work)
    assert len(dirs) == 3
    assert not (dirs[1] / "vis_data").exists(), "the middle start must be a failed one"
    first_vals = {r["step"]: r["mIoU"] for r in _scalars(dirs[0]) if "mIoU" in r}
    last_vals = {r["step"]: r["mIoU"] for r in _scalars(dirs[2]) if "mIoU" in r}
    assert set(first_vals) & set(last_vals) == {10}  # val at 10 in both starts, different values
    assert first_vals[10] != last_vals[10]

    log = read_run_log(work)
    assert log.starts == 3
    expected = _expected_curve([2, 4, 6, 8]) + _expected_curve([10, 12, 14, 16], offset=50.0)
    assert list(log.curve) == expected
    assert log.last_iter == 16
    assert log.max_iters == 16
    assert log.warnings == ()


@pytest.mark.slow
def test_real_text_only_fallback_equals_json(real_runs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("by_iter", "by_epoch", "resumed"):
        work = tmp_path / name
        shutil.copytree(real_runs[name], work)
        for ts in _ts_dirs(work):
            shutil.rmtree(ts / "vis_data", ignore_errors=True)
        from_text = read_run_log(work)
        from_json = read_run_log(real_runs[name])
        assert from_text.curve == from_json.curve, name
        assert from_text.last_iter == from_json.last_iter, name
        assert from_text.starts == from_json.starts, name
        assert from_text.first_time == from_json.first_time, name
        assert from_text.seconds_per_iter is not None, name


@pytest.mark.slow
def test_real_console_copy_with_colours_and_no_year(console_run: tuple[Path, Path]) -> None:
    work, stdout = console_run
    text = stdout.read_text()
    assert "\x1b[" in text  # FORCE_COLOR=1: mmengine colours the level name
    train_lines = [line for line in text.splitlines() if "Iter(train)" in line]
    assert train_lines and all(re.match(r"\d\d/\d\d \d\d:\d\d:\d\d - mmengine", line) for line in train_lines)
    log = read_text_log(stdout)
    assert list(log.curve) == _expected_curve([4, 8])
    assert log.last_iter == 8 and log.max_iters == 8
    assert log.first_time is not None and abs(log.first_time - time.time()) < 600
    assert log.curve == read_run_log(work).curve


@pytest.mark.slow
def test_log_cache_reads_only_appended_bytes(real_runs: dict[str, Path], tmp_path: Path) -> None:
    src = real_runs["resumed"]
    work = tmp_path / "wd"
    shutil.copytree(src, work)
    full = read_run_log(src)
    last = _ts_dirs(work)[-1]
    scalars = last / "vis_data" / "scalars.json"
    data = scalars.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 20  # mid-line: a record being written
    scalars.write_bytes(data[:cut])
    cache = LogCache()
    partial = cache.read_run_log(work)
    assert partial.warnings == ()  # an incomplete last line is not an error
    assert len(partial.curve) < len(full.curve)
    with scalars.open("ab") as fh:  # the writer goes on
        fh.write(data[cut:])
    assert cache.read_run_log(work) == full
    # Replaced by a shorter file (new inode): read from the start again.
    short = b"".join(line + b"\n" for line in data.splitlines()[:2])
    scalars.unlink()
    scalars.write_bytes(short)
    again = cache.read_run_log(work)
    assert again == read_run_log(work)
    assert max(p.iter for p in again.curve) == 10


@pytest.mark.slow
def test_prefetch_reads_unseen_runs_in_worker_processes(real_runs: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(LIMITS, "prefetch_min_runs_per_worker", 2)
    dirs = []
    for i in range(9):
        name = ("by_iter", "by_epoch", "resumed")[i % 3]
        dirs.append(tmp_path / f"{name}{i}")
        shutil.copytree(real_runs[name], dirs[-1])
    expected = [read_run_log(d) for d in dirs]
    cache = LogCache()
    cache.read_run_log(dirs[0])
    assert cache.prefetch(dirs, workers=2) == 8  # the one already seen is not read again
    with caplog.at_level("DEBUG", logger="prove_jobs.logs"):
        assert [cache.read_run_log(d) for d in dirs] == expected
    assert log_reads(caplog) == [], "parsed in the parent after prefetch"
    monkeypatch.undo()
    # the merged file states serve incremental reads and the cache file like any others
    scalars = _ts_dirs(dirs[1])[-1] / "vis_data" / "scalars.json"
    with scalars.open("a") as fh:
        fh.write('{"aAcc": 90.0, "mIoU": 55.5, "mAcc": 60.0, "data_time": 0.01, "time": 0.02, "step": 16}\n')
    assert cache.read_run_log(dirs[1]) == read_run_log(dirs[1])
    assert cache.read_run_log(dirs[1]).curve[-1].miou == 55.5
    cache.save(tmp_path / "cache.pickle")
    loaded = LogCache.load(tmp_path / "cache.pickle")
    assert [loaded.read_run_log(d) for d in dirs] == [read_run_log(d) for d in dirs]
    assert LogCache().prefetch(dirs[:3]) == 0  # too few runs to be worth a process pool


# ---------------------------------------------------------------------------------------------
# Hand-made edge cases

TRAIN = '{{"base_lr": 0.01, "lr": 0.01, "data_time": 0.01, "loss": {loss}, "time": {t}, "iter": {i}, "step": {i}}}\n'
VAL = '{{"aAcc": {a}, "mIoU": {m}, "mAcc": {c}, "data_time": 0.01, "time": 0.02, "step": {s}}}\n'
LOG = "2026/02/03 10:{mm:02d}:00 - mmengine - INFO - "


def _start(work: Path, ts: str, json_text: str | None, log_text: str | None = None) -> Path:
    d = work / ts
    d.mkdir(parents=True)
    if json_text is not None:
        (d / "vis_data").mkdir()
        (d / "vis_data" / "scalars.json").write_text(json_text)
    if log_text is not None:
        (d / f"{ts}.log").write_text(log_text)
    return d


def _train_line(i: int, total: int = 20000, mm: int = 0, eta: str = "1 day, 0:00:00", loss: str = "0.4460") -> str:
    return (
        f"{LOG.format(mm=mm)}Iter(train) [{i:5d}/{total}]  base_lr: 1.0000e-02 lr: 9.0000e-03  eta: {eta}  "
        f"time: 0.4567  data_time: 0.0100  memory: 20512  grad_norm: 3.2000  loss: {loss}  decode.loss_ce: 0.3000\n"
    )


def _val_line(aacc: float, miou: float, macc: float, mm: int = 0) -> str:
    return (
        f"{LOG.format(mm=mm)}Iter(val) [500/500]    aAcc: {aacc:.4f}  mIoU: {miou:.4f}  mAcc: {macc:.4f}  "
        "data_time: 0.0100  time: 0.2000\n"
    )


def test_missing_work_dir_is_empty(tmp_path: Path) -> None:
    log = read_run_log(tmp_path / "nope")
    assert log == RunLog(None, None, (), 0, None, None, None, ())


def test_text_eta_with_days_and_reference_values(tmp_path: Path) -> None:
    text = (
        _train_line(1950, eta="1 day, 0:00:00")
        + _train_line(2000, eta="2 days, 3:04:05")
        + f"{LOG.format(mm=1)}Saving checkpoint at 2000 iterations\n"
        + "+---------------+-------+-------+\n|     Class     |  IoU  |  Acc  |\n"
        + _val_line(92.98, 57.78, 66.12, mm=5)
        + _train_line(2050, eta="23:59:59", mm=6)
    )
    _start(tmp_path, "20260203_100000", None, text)
    log = read_run_log(tmp_path)
    assert list(log.curve) == [ValPoint(2000, 57.78, 92.98, 66.12)]
    assert log.last_iter == 2050 and log.max_iters == 20000
    assert log.seconds_per_iter == pytest.approx(0.4567)
    assert log.last_time is not None and log.first_time is not None
    assert log.last_time - log.first_time == 6 * 60
    assert log.starts == 1


def test_truncated_last_line_is_skipped_without_warning(tmp_path: Path) -> None:
    body = TRAIN.format(loss=0.5, t=0.4, i=50) + VAL.format(a=93.0, m=57.0, c=66.0, s=50)
    _start(tmp_path, "20260203_100000", body + '{"lr": 0.01, "loss": 0.4', _train_line(50) + _train_line(100)[:60])
    log = read_run_log(tmp_path)
    assert [p.iter for p in log.curve] == [50]
    assert log.last_iter == 50
    assert log.warnings == ()


def test_final_json_line_without_newline_but_complete_is_read(tmp_path: Path) -> None:
    body = TRAIN.format(loss=0.5, t=0.4, i=50) + VAL.format(a=93.0, m=57.0, c=66.0, s=50).rstrip("\n")
    chunk = parse_json_chunk(body.encode())
    assert [r.kind for r in chunk.records] == ["train", "val"]
    assert chunk.offset == len(body.encode())


def test_garbage_middle_line_warns_and_keeps_the_rest(tmp_path: Path) -> None:
    body = (
        TRAIN.format(loss=0.5, t=0.4, i=50)
        + '{"lr": 0.01, "loss": 0.5, "ti\n'  # torn write in the middle
        + VAL.format(a=93.0, m=57.0, c=66.0, s=50)
        + TRAIN.format(loss=0.4, t=0.4, i=100)
    )
    _start(tmp_path, "20260203_100000", body)
    log = read_run_log(tmp_path)
    assert [p.iter for p in log.curve] == [50]
    assert log.last_iter == 100
    assert len(log.warnings) == 1 and "unparsable" in log.warnings[0] and "scalars.json" in log.warnings[0]


def test_binary_garbage(tmp_path: Path) -> None:
    rng_bytes = bytes(range(256)) * 4
    d = _start(tmp_path, "20260203_100000", None)
    (d / "vis_data").mkdir()
    (d / "vis_data" / "scalars.json").write_bytes(
        TRAIN.format(loss=0.5, t=0.4, i=50).encode() + rng_bytes + b"\n" + VAL.format(a=1, m=2, c=3, s=50).encode()
    )
    (d / f"{d.name}.log").write_bytes(_train_line(50).encode() + b"\x00\x00\xff\xfe garbage\n" + rng_bytes)
    log = read_run_log(tmp_path)
    assert list(log.curve) == [ValPoint(50, 2.0, 1.0, 3.0)]
    assert any("unparsable" in w for w in log.warnings)
    assert any("binary" in w for w in log.warnings)
    # The text log alone (no JSON) still gives the train line and warns.
    shutil.rmtree(d / "vis_data")
    text_only = read_run_log(tmp_path)
    assert text_only.last_iter == 50
    assert any("binary" in w for w in text_only.warnings)


def test_nan_loss_warns(tmp_path: Path) -> None:
    body = TRAIN.format(loss=0.5, t=0.4, i=50) + TRAIN.format(loss="NaN", t=0.4, i=100)
    _start(tmp_path, "20260203_100000", body, _train_line(50) + _train_line(100, loss="nan"))
    log = read_run_log(tmp_path)
    assert log.last_iter == 100
    assert len(log.warnings) == 1 and "non-finite loss" in log.warnings[0] and "100" in log.warnings[0]
    chunk = parse_text_chunk((_train_line(50) + _train_line(100, loss="nan")).encode())
    assert chunk.records[1].loss is not None and math.isnan(chunk.records[1].loss)
    assert any("non-finite loss" in w for w in chunk.warnings)


def test_failed_start_without_vis_data_counts_as_start(tmp_path: Path) -> None:
    _start(
        tmp_path,
        "20260203_100000",
        TRAIN.format(loss=0.5, t=0.4, i=50) + VAL.format(a=93.0, m=57.0, c=66.0, s=50),
        _train_line(50),
    )
    failed = _start(tmp_path, "20260203_110000", None, f"{LOG.format(mm=0)}Config:\nmodel = dict()\n")
    (failed / "vis_data").mkdir()  # only config.py, no scalars
    (failed / "vis_data" / "config.py").write_text("model = dict()\n")
    log = read_run_log(tmp_path)
    assert log.starts == 2
    assert [p.iter for p in log.curve] == [50]
    assert log.last_iter == 50


def test_unreadable_file_even_as_root(tmp_path: Path) -> None:
    # A directory where a file is expected fails to open for everyone, root included.
    d = _start(tmp_path, "20260203_100000", None, None)
    (d / f"{d.name}.log").mkdir()
    (d / "vis_data").mkdir()
    (d / "vis_data" / "scalars.json").write_text(TRAIN.format(loss=0.5, t=0.4, i=50))
    log = read_run_log(tmp_path)
    assert log.last_iter == 50  # is_file() is False for the directory: skipped, no crash
    warnings = LogCache().read_text_log(d / f"{d.name}.log").warnings
    assert warnings and "cannot read" in warnings[0]


def test_mmseg0x_log_json_fractions_become_percent() -> None:
    log = read_run_log(FIXTURES / "mmseg0x")
    assert [p.iter for p in log.curve] == [2000, 4000]
    assert log.curve[0] == ValPoint(2000, 57.78, 92.98, 66.12)
    assert log.curve[1].miou == 56.41 and log.curve[1].aacc == 92.72
    assert log.last_iter == 4050
    assert log.starts == 1


def test_old_mmengine_without_iter_key_and_hierarchy_keys(tmp_path: Path) -> None:
    body = (
        '{"lr": 0.01, "loss": 0.5, "time": 0.3, "data_time": 0.1, "step": 50}\n'
        '{"val/aAcc": 90.0, "val/mIoU": 60.0, "val/mAcc": 70.0, "val/time": 0.1, "step": 50}\n'
    )
    _start(tmp_path, "20260203_100000", body)
    log = read_run_log(tmp_path)
    assert list(log.curve) == [ValPoint(50, 60.0, 90.0, 70.0)]
    assert log.last_iter == 50 and log.seconds_per_iter == pytest.approx(0.3)


def test_resume_in_progress_later_start_replaces_train_position(tmp_path: Path) -> None:
    first = (
        TRAIN.format(loss=0.5, t=0.4, i=50)
        + TRAIN.format(loss=0.5, t=0.4, i=100)
        + VAL.format(a=1, m=2, c=3, s=100)
        + TRAIN.format(loss=0.5, t=0.4, i=150)
        + VAL.format(a=9, m=9, c=9, s=150)
        + TRAIN.format(loss=0.5, t=0.4, i=200)
    )
    second = TRAIN.format(loss=0.5, t=0.2, i=150) + VAL.format(a=4, m=5, c=6, s=150)
    _start(tmp_path, "20260203_100000", first)
    only_first = read_run_log(tmp_path)
    assert only_first.last_iter == 200 and only_first.curve[-1] == ValPoint(150, 9.0, 9.0, 9.0)
    _start(tmp_path, "20260203_120000", second)
    log = read_run_log(tmp_path)
    assert list(log.curve) == [ValPoint(100, 2.0, 1.0, 3.0), ValPoint(150, 5.0, 4.0, 6.0)]
    # The first start had got to 200 before it died; the resumed one (from 100) is at 150: that is where the run is.
    assert log.last_iter == 150
    assert log.seconds_per_iter == pytest.approx((0.4 + 0.4 + 0.2) / 3)  # 200 of the dead branch is gone


def test_parse_chunk_offsets_allow_incremental_reads() -> None:
    data = (TRAIN.format(loss=0.5, t=0.4, i=50) + VAL.format(a=1, m=2, c=3, s=50)).encode()
    half = data.index(b"\n") + 5
    first = parse_json_chunk(data[:half], 0)
    assert first.offset == data.index(b"\n") + 1 and len(first.records) == 1
    rest = parse_json_chunk(data[first.offset :], first.offset)
    assert rest.offset == len(data) and [r.kind for r in rest.records] == ["val"]


# ---------------------------------------------------------------------------------------------
# Sparse parsing equals a full parse; the persistent cache

import marshal  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402

from prove_jobs.logs import default_cache_path, read_run_log_full, read_text_log_full  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_status
    finally:
        sys.path.remove(str(BENCH))
    return bench_status


Parsers = Callable[[], list[str]]


@pytest.fixture
def sparse_everywhere(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Parsers:
    """Take the sparse paths even for tiny files; the function says which parser answered each chunk so far."""
    monkeypatch.setattr(LIMITS, "sparse_min_bytes", 0)
    caplog.set_level("DEBUG", logger="prove_jobs.logs")
    return lambda: [how for _, how in log_reads(caplog)]


@pytest.mark.slow
def test_sparse_equals_full_parse_on_real_mmengine_logs(
    real_runs: dict[str, Path], tmp_path: Path, sparse_everywhere: Parsers
) -> None:
    for name, work in real_runs.items():
        assert read_run_log(work) == read_run_log_full(work), name
        text_only = tmp_path / name
        shutil.copytree(work, text_only)
        for ts in _ts_dirs(text_only):
            shutil.rmtree(ts / "vis_data", ignore_errors=True)
        assert read_run_log(text_only) == read_run_log_full(text_only), name
    assert "sparse json" in sparse_everywhere() and "sparse text" in sparse_everywhere()


@pytest.mark.slow
def test_sparse_equals_full_parse_on_console_log(console_run: tuple[Path, Path], sparse_everywhere: Parsers) -> None:
    _work, stdout = console_run
    full = read_text_log_full(stdout)
    assert read_text_log(stdout) == full
    assert LogCache().read_text_log(stdout) == full


def test_sparse_equals_full_parse_on_a_generated_three_start_run(tmp_path: Path) -> None:
    bench = _bench()
    for seed in (1, 10):  # 10: still training
        work = tmp_path / f"run{seed}"
        bench.write_run(work, seed)
        assert (work / _ts_dirs(work)[0] / "vis_data" / "scalars.json").stat().st_size > LIMITS.sparse_min_bytes
        sparse, full = read_run_log(work), read_run_log_full(work)
        assert sparse == full
        assert sparse.starts == 3 and sparse.warnings == ()
        assert sparse.last_iter == (bench.MAX_ITERS if seed == 1 else bench.IN_PROGRESS_END)
        assert sparse.max_iters == bench.MAX_ITERS
        assert [p.iter for p in sparse.curve] == list(range(2000, sparse.last_iter + 1, 2000))
        # Without the JSON the text logs alone give the same curve and position.
        for ts in _ts_dirs(work):
            shutil.rmtree(ts / "vis_data")
        text_sparse = read_run_log(work)
        assert text_sparse == read_run_log_full(work)
        assert text_sparse.curve == sparse.curve and text_sparse.last_iter == sparse.last_iter


def test_sparse_resume_cutting_below_the_kept_tail(tmp_path: Path, sparse_everywhere: Parsers) -> None:
    # The first start logged up to 12000 (val at 10000, then 39 records more); the resumed one has
    # logged only 2: the speed needs the first start's records just below the resume point (10050).
    first = "".join(TRAIN.format(loss=0.5, t=0.1 + i / 1000, i=i * 50) for i in range(1, 241))
    first += VAL.format(a=1, m=2, c=3, s=10000)
    second = TRAIN.format(loss=0.5, t=0.9, i=10050) + TRAIN.format(loss=0.5, t=0.8, i=10100)
    _start(tmp_path, "20260203_100000", first)
    _start(tmp_path, "20260203_120000", second)
    log = read_run_log(tmp_path)
    assert log == read_run_log_full(tmp_path)
    assert log.last_iter == 10100
    assert log.seconds_per_iter == pytest.approx((0.298 + 0.299 + 0.3 + 0.9 + 0.8) / 5)
    assert "sparse json" in sparse_everywhere()


def test_sparse_json_garbage_falls_back_to_exact_warnings(tmp_path: Path, sparse_everywhere: Parsers) -> None:
    body = "".join(TRAIN.format(loss=0.5, t=0.4, i=i * 50) for i in range(1, 50))
    torn = body + '{"lr": 0.01, "loss": 0.5, "ti' + TRAIN.format(loss=0.5, t=0.4, i=2500)
    _start(tmp_path, "20260203_100000", torn)
    log = read_run_log(tmp_path)
    assert log == read_run_log_full(tmp_path)
    assert len(log.warnings) == 1 and "unparsable" in log.warnings[0]
    assert "line by line (not a clean log)" in sparse_everywhere()


def test_sparse_nan_loss_is_found(tmp_path: Path, sparse_everywhere: Parsers) -> None:
    body = "".join(TRAIN.format(loss="NaN" if i == 7 else 0.5, t=0.4, i=i * 50) for i in range(1, 50))
    _start(tmp_path, "20260203_100000", body)
    log = read_run_log(tmp_path)
    assert log == read_run_log_full(tmp_path)
    assert len(log.warnings) == 1 and "non-finite loss at iteration(s) 350" in log.warnings[0]


def test_cache_file_round_trip_reads_only_appended_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bench = _bench()
    work = tmp_path / "run"
    bench.write_run(work, 10)  # still training
    cache_file = tmp_path / "cache" / "logs.marshal"
    first = LogCache()
    log = first.read_run_log(work)
    first.save(cache_file)
    assert cache_file.stat().st_size < 20_000
    assert not [p for p in cache_file.parent.iterdir() if p != cache_file]  # no temp file left

    caplog.set_level("DEBUG", logger="prove_jobs.logs")
    loaded = LogCache.load(cache_file)
    assert loaded.read_run_log(work) == log
    assert log_reads(caplog) == []  # nothing changed: nothing read
    assert log_assembled(caplog) == []  # and the run is not put together again: its summary came with the file
    _undo, appended = bench.append_lines(work, 10, 50)
    after = loaded.read_run_log(work)
    read = [size for size, _ in log_reads(caplog)]
    assert sum(read) == appended and len(read) == 2  # the new JSON and text lines, nothing else
    caplog.set_level("WARNING", logger="prove_jobs.logs")
    assert after == read_run_log(work) == read_run_log_full(work)
    assert after.last_iter == bench.IN_PROGRESS_END + 50 * 50


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a pickle at all",
        pickle.dumps(("prove-jobs-logcache-0", ())),  # another format
        pickle.dumps(("prove-jobs-logcache-1", (("x", "json", (1, 2)),))),  # an older format
        pickle.dumps(("prove-jobs-logcache-2", (("x", "json", (1, 2)),), ())),  # an older format
        pickle.dumps(("prove-jobs-logcache-3", b"", ())),  # an older format
        pickle.dumps(("prove-jobs-logcache-5", (("x", "json"),), ())),  # wrong shape
        pickle.dumps(("prove-jobs-logcache-5", (), (("/r", (), (1,)),))),  # a bad run summary
        pickle.dumps(("prove-jobs-logcache-5", (("/w", b"garbage"),), ())),  # damaged file states
        pickle.dumps(Path("/etc/passwd")),  # the format before marshal, and a class
        marshal.dumps(("prove-jobs-logcache-5", (), ())),  # an older format
        marshal.dumps(compile("import os", "x", "exec")),  # code: loaded as data, never run
    ],
)
def test_corrupt_cache_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    _start(tmp_path / "wd", "20260203_100000", TRAIN.format(loss=0.5, t=0.4, i=50))
    good = LogCache()
    good.read_run_log(tmp_path / "wd")
    good.save(tmp_path / "cache.pickle")
    data = (tmp_path / "cache.pickle").read_bytes()
    assert LogCache.load(tmp_path / "cache.pickle").run_dirs == [str(tmp_path / "wd")]  # the good file
    for variant in (content, data[: len(data) // 2]):
        (tmp_path / "cache.pickle").write_bytes(variant)
        cache = LogCache.load(tmp_path / "cache.pickle")
        assert cache.run_dirs == []
        assert cache.read_run_log(tmp_path / "wd") == read_run_log(tmp_path / "wd")
    assert LogCache.load(tmp_path / "missing.pickle").run_dirs == []


def test_damaged_cache_of_the_current_format_is_ignored(tmp_path: Path) -> None:
    _start(tmp_path / "wd", "20260203_100000", TRAIN.format(loss=0.5, t=0.4, i=50))
    good = LogCache()
    expected = good.read_run_log(tmp_path / "wd")
    good.save(tmp_path / "cache")
    scope, body = (tmp_path / "cache").read_bytes().split(b"\n", 1)  # a line naming the scope, then marshal
    form = marshal.loads(body)[0]  # the format this version writes
    no_times = marshal.dumps(())
    for damaged in [
        (form, (("x", "json"),), (), no_times, ()),  # wrong shape
        (form, (), (("/r", (), (1,)),), no_times, ()),  # a bad run summary
        (form, ((str(tmp_path / "wd"), b"garbage"),), (), no_times, ()),  # damaged file states
        (form, ((str(tmp_path / "wd"), 7),), (), no_times, ()),  # file states of the wrong type
        (form, (), (), no_times, (("/r", "yesterday"),)),  # a last-seen time that is no number
        (form, (), (), no_times),  # the shape before the last-seen times
        (form, (), ()),  # the shape before the training times
    ]:
        (tmp_path / "cache").write_bytes(scope + b"\n" + marshal.dumps(damaged))
        cache = LogCache.load(tmp_path / "cache")
        assert cache.read_run_log(tmp_path / "wd") == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the cache file to another user")
def test_cache_file_of_another_user_is_not_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _start(tmp_path / "wd", "20260203_100000", TRAIN.format(loss=0.5, t=0.4, i=50))
    good = LogCache()
    good.read_run_log(tmp_path / "wd")
    good.save(tmp_path / "cache")
    caplog.set_level("DEBUG", logger="prove_jobs.logs")
    assert LogCache.load(tmp_path / "cache").read_run_log(tmp_path / "wd")
    assert log_assembled(caplog) == []  # our own file: the run came from it
    os.chown(tmp_path / "cache", 65534, 65534)  # nobody's
    assert LogCache.load(tmp_path / "cache").read_run_log(tmp_path / "wd")
    assert log_assembled(caplog) != []  # theirs: not loaded, the run was read afresh


def test_default_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    one, other = default_cache_path(Path("/data/a")), default_cache_path(Path("/data/b"))
    assert one.parent == other.parent == tmp_path / "prove-jobs" / "logs"  # a file per folder looked at
    assert one != other and one == default_cache_path(Path("/data/a")) and one.suffix == ".marshal"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_path(Path("/data/a")).parent == tmp_path / "home" / ".cache" / "prove-jobs" / "logs"
