"""The log cache stays small: a look at a big root of planted runs does not slow a later look at a small
root, and entries leave once their runs are gone, unseen for long, or beyond the cap.

The CLI tests run the console script in a subprocess and read its peak memory from
``RUSAGE_CHILDREN`` (one child at a time: the high-water mark is the biggest child so far, so each
measure runs in a fresh ``python -c`` that starts the CLI and reports its own child's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prove_jobs.logs import LogCache, cache_files, default_cache_path

BIN = Path(sys.executable).parent / "prove-jobs"
RECORDS = ('{"lr": 0.01, "loss": 1.0, "time": 0.5, "iter": 10, "memory": 100, "step": 10}\n'
           '{"aAcc": 80.0, "mIoU": 50.0, "mAcc": 60.0, "step": 10}\n')
# Starts the CLI as a child and prints its wall time and peak RSS (kB), and nothing else.
MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
assert done.returncode == 0, done.stderr
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def plant(root: Path, count: int) -> list[Path]:
    """``count`` tiny runs (one start, a train and a val record) as anyone in the group can make them."""
    dirs = [root / f"V{k % 10}" / "baseline" / "cityscapes" / f"m{k:06d}" for k in range(count)]
    for run_dir in dirs:
        (run_dir / "20260101_000000" / "vis_data").mkdir(parents=True)
        (run_dir / "20260101_000000" / "vis_data" / "scalars.json").write_text(RECORDS)
    return dirs


def status_root(root: Path, env: dict[str, str]) -> tuple[float, int]:
    """``prove-jobs status --root ROOT --json``: (seconds, peak RSS in kB)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(BIN), "status", "--root", str(root), "--json"],
                          capture_output=True, text=True, env=env, timeout=600, check=True)
    seconds, rss = done.stdout.split()
    return float(seconds), int(rss)


def entries(path: Path) -> int:
    return len(LogCache.load(path).run_dirs)


@pytest.mark.slow
def test_a_big_root_does_not_slow_a_small_one_and_leaves_once_deleted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = dict(os.environ)
    small, big, other = tmp_path / "small", tmp_path / "big", tmp_path / "other"
    plant(small, 4)
    status_root(small, env)  # cold
    before_s, before_kb = status_root(small, env)
    plant(big, 6000)  # 50,000 in the issue (docs/performance.md); the mechanism is the same
    plant(other, 50)
    status_root(big, env)
    status_root(other, env)
    after_s, after_kb = status_root(small, env)
    # On one file for every root this status loaded the 6,000 planted runs: +14 MB and +0.15 s.
    assert after_kb < before_kb + 3_000, (before_kb, after_kb)
    assert entries(default_cache_path(small)) == 4
    assert entries(default_cache_path(big)) == 6000

    shutil.rmtree(big / "V0")  # a tenth of the planted runs deleted: a look at the root forgets them
    status_root(big, env)
    assert entries(default_cache_path(big)) == 5400
    for variant in big.iterdir():  # all deleted, the root left: its file goes at the next look
        shutil.rmtree(variant)
    status_root(big, env)
    assert not default_cache_path(big).exists()
    shutil.rmtree(other)  # the root itself deleted: no look at it will come; the next save of any file sweeps it
    assert default_cache_path(other).exists()
    newest = small / "V0" / "baseline" / "cityscapes" / "m000000" / "20260101_000000" / "vis_data" / "scalars.json"
    with newest.open("a") as fh:
        fh.write('{"lr": 0.01, "loss": 0.9, "time": 0.5, "iter": 20, "memory": 100, "step": 20}\n')
    status_root(small, env)
    assert not default_cache_path(other).exists()
    assert sorted(p.name for p in cache_files.cache_dir().iterdir()) == [default_cache_path(small).name]
    last_s, last_kb = status_root(small, env)
    assert last_kb < before_kb + 3_000, (before_kb, last_kb)
    print(json.dumps({"small_before": [before_s, before_kb], "small_after_big": [after_s, after_kb],
                      "small_after_delete": [last_s, last_kb]}))


def test_runs_unseen_for_long_or_beyond_the_cap_leave_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = plant(tmp_path / "old", 6), plant(tmp_path / "new", 6)
    path = tmp_path / "cache.marshal"
    cache = LogCache()
    for run_dir in old:
        cache.read_run_log(run_dir)
    cache.save(path)
    later = time.time() + cache_files.MAX_AGE_S + 3600  # two weeks on, only the new runs are looked at
    cache = LogCache.load(path)
    cache.clock = lambda: later
    for run_dir in new:
        cache.read_run_log(run_dir)
    cache.save(path)
    assert sorted(LogCache.load(path).run_dirs) == sorted(map(str, new))

    monkeypatch.setattr("prove_jobs.logs.cache.MAX_RUNS", 4)
    cache = LogCache.load(path)
    for k, run_dir in enumerate(new):  # each seen later than the one before, so the first two leave
        cache.clock = lambda k=k: later + 2 * cache_files.SEEN_EVERY_S * (k + 1)
        cache.read_run_log(run_dir)
    cache.save(path)
    assert sorted(LogCache.load(path).run_dirs) == sorted(map(str, new[2:]))


def test_a_run_dir_seen_missing_leaves_the_file(tmp_path: Path) -> None:
    runs = plant(tmp_path / "root", 3)
    path = tmp_path / "cache.marshal"
    cache = LogCache()
    for run_dir in runs:
        cache.read_run_log(run_dir)
    cache.save(path)
    shutil.rmtree(runs[0])
    cache = LogCache.load(path)
    for run_dir in runs:
        cache.read_run_log(run_dir)
    cache.save(path)
    assert sorted(LogCache.load(path).run_dirs) == sorted(map(str, runs[1:]))
