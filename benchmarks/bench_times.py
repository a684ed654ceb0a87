"""Benchmark: the training time of every run of a big sweep (what ``prove-jobs report`` needs).

Usage::

    .venv/bin/python benchmarks/bench_times.py [--data bench-data] [--runs 1000]

Reads the data root that ``bench_status.py`` builds (1,000 three-start runs, 1.1 GB of logs) and
never writes into it: run ``bench_status.py`` first. Side by side in one process:

* cold: ``read_run_log`` (a status) and ``training_time`` of every run, no cache;
* the report's old ``training_seconds`` (``json.loads`` of every line) on a sample, scaled;
* text only: every run timed from its text logs alone (as when ``vis_data/`` was deleted);
* the line-by-line readers the fast scans fall back to, on a sample, scaled;
* warm: ``LogCache.training_time`` / ``read_run_log`` with nothing changed, in memory and from
  the cache file in a new ``LogCache``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_status  # noqa: E402

from prove_jobs.logs import LogCache, read_run_log, training_time  # noqa: E402
from prove_jobs.logs import times as times_module  # noqa: E402
from prove_jobs.logs.layout import StartFiles, stat_file  # noqa: E402


def old_training_seconds(run_dir: Path) -> float | None:
    """prove_jobs.report.training_seconds before it used prove_jobs.logs.times (the reference)."""
    per_iter: dict[int, float] = {}
    for start in sorted(p for p in run_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}_\d{6}", p.name)):
        try:
            lines = (start / "vis_data" / "scalars.json").read_bytes().splitlines()
        except OSError:
            continue
        records: list[tuple[int, float]] = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "loss" in record and "time" in record:
                it = record.get("iter", record.get("step"))
                if isinstance(it, int) and isinstance(record["time"], int | float) and math.isfinite(record["time"]):
                    records.append((it, float(record["time"])))
        if records:
            resumed_at = min(it for it, _ in records)
            for it in [i for i in per_iter if i >= resumed_at]:
                del per_iter[it]
            per_iter.update(records)
    if not per_iter:
        return None
    total, previous = 0.0, 0
    for it in sorted(per_iter):
        total += per_iter[it] * (it - previous)
        previous = it
    return total


def text_only(run_dir: Path) -> times_module.TrainingTime:
    """The run timed as if every start's vis_data/ were gone: its text logs alone."""
    starts = []
    for ts in sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit()):
        log = str(run_dir / ts / f"{ts}.log")
        got, _ = times_module.read_start(StartFiles(ts, None, None, log, stat_file(log)))
        if got is not None:
            starts.append(got)
    return times_module.merge(starts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--data", type=Path, default=REPO / "bench-data")
    ap.add_argument("--sample", type=int, default=50, help="runs the slow readers time (scaled to all runs)")
    args = ap.parse_args(argv)
    root = args.data.resolve()
    try:
        params = json.loads((root / bench_status.PARAMS_FILE).read_text())
    except (OSError, ValueError):
        params = None
    if params != json.loads(json.dumps(dict(bench_status.PARAMS, runs=args.runs))):
        print(f"{root}: not bench_status.py's data for {args.runs} runs: run benchmarks/bench_status.py first")
        return 2
    dirs = [bench_status.run_dir_of(root, k) for k in range(args.runs)]
    sizes = [f.stat().st_size for d in dirs for f in d.glob("2*/**/*") if f.suffix in (".json", ".log")]
    print(f"data: {len(dirs)} runs, {sum(sizes) / 1e6:.0f} MB of logs")
    sample = dirs[: args.sample]
    scale = len(dirs) / len(sample)
    rows: list[tuple[str, float, str]] = []

    status_s, logs = bench_status.timed(lambda: [read_run_log(d) for d in dirs])
    rows.append(("cold read_run_log, no cache (a status)", status_s, ""))
    cold_s, cold = bench_status.timed(lambda: [training_time(d) for d in dirs])
    rows.append(("cold training_time, no cache", cold_s, f"{cold_s / status_s:.2f}x read_run_log"))
    old_s, old = bench_status.timed(lambda: [old_training_seconds(d) for d in sample])
    assert old == [t.seconds for t in cold[: len(sample)]], "training_time differs from the old training_seconds"
    rows.append((f"old training_seconds, json.loads ({len(sample)} runs, scaled)", old_s * scale,
                 f"{old_s * scale / cold_s:.1f}x slower than training_time"))
    for t, log in zip(cold, logs, strict=True):
        assert [it for it, _ in t.at_iter] == [p.iter for p in log.curve], "at_iter is not at the curve's vals"

    text_s, text = bench_status.timed(lambda: [text_only(d) for d in dirs])
    for t, j in zip(text, cold, strict=True):  # mmengine prints `time` with 4 decimals
        assert j.seconds is not None and t.seconds is not None and abs(t.seconds - j.seconds) <= 5e-5 * 80_000 + 1e-6
        assert [it for it, _ in t.at_iter] == [it for it, _ in j.at_iter]
    rows.append(("text only (vis_data/ gone): every run from its text logs", text_s, f"{text_s / cold_s:.2f}x JSON"))

    def slow_readers(reader: Callable[[bytes], object], pattern: str) -> float:
        files = [f.read_bytes() for d in sample for f in sorted(d.glob(pattern))]
        return bench_status.timed(lambda: [reader(data) for data in files])[0] * scale

    json_fast = slow_readers(times_module.json_times, "2*/vis_data/scalars.json")
    json_slow = slow_readers(times_module.json_times_by_line, "2*/vis_data/scalars.json")
    text_fast = slow_readers(times_module.text_times, "2*/2*.log")
    text_slow = slow_readers(times_module.text_times_by_line, "2*/2*.log")
    rows.append(("  JSON scan, files in memory (scaled)", json_fast, ""))
    rows.append(("  JSON line by line, json.loads: the fallback (scaled)", json_slow, f"{json_slow / json_fast:.1f}x"))
    rows.append(("  text scan, files in memory (scaled)", text_fast, ""))
    rows.append(("  text line by line, text_line: the fallback (scaled)", text_slow, f"{text_slow / text_fast:.1f}x"))

    cache = LogCache()
    fill_s, filled = bench_status.timed(lambda: [cache.training_time(d) for d in dirs])
    assert filled == cold
    for d in dirs:
        cache.read_run_log(d)
    warm_log_s, _ = bench_status.timed(lambda: [cache.read_run_log(d) for d in dirs], repeat=3)
    warm_s, warm = bench_status.timed(lambda: [cache.training_time(d) for d in dirs], repeat=3)
    assert warm == cold
    rows.append(("LogCache.training_time, cold (fills the memo)", fill_s, ""))
    rows.append(("warm read_run_log, in-memory cache", warm_log_s, f"{status_s / warm_log_s:.0f}x faster than cold"))
    rows.append(("warm training_time, in-memory cache", warm_s, f"{cold_s / warm_s:.0f}x faster than cold"))
    with tempfile.TemporaryDirectory() as tmp:
        cache_file = Path(tmp) / "logs.marshal"
        save_s, _ = bench_status.timed(lambda: cache.save(cache_file))
        size = cache_file.stat().st_size

        def from_disk(read: Callable[[LogCache, Path], object]) -> list[object]:
            loaded = LogCache.load(cache_file)
            return [read(loaded, d) for d in dirs]

        disk_log_s, _ = bench_status.timed(lambda: from_disk(LogCache.read_run_log), repeat=3)
        disk_s, disk = bench_status.timed(lambda: from_disk(LogCache.training_time), repeat=3)
        assert disk == cold
        rows.append((f"warm read_run_log, cache file ({size / 1e6:.1f} MB) loaded", disk_log_s,
                     f"{status_s / disk_log_s:.0f}x faster than cold"))
        rows.append(("warm training_time, cache file loaded", disk_s, f"{cold_s / disk_s:.0f}x faster than cold"))
        rows.append(("(cache file save, both memos)", save_s, ""))

    print(f"{'measure':<60} {'seconds':>9}  ratio")
    for name, secs, ratio in rows:
        print(f"{name:<60} {secs:>9.3f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
