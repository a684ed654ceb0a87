"""Benchmark: a look at a big root must not slow a later look at a small one (the log cache stays small).

Usage::

    .venv/bin/python benchmarks/bench_cache.py [--runs 50000] [--repo .]

In a temporary folder: a small root of 4 runs and a big one of ``--runs`` tiny planted runs (one
training start, a train and a val record each: what anyone in the group can make in seconds). With
an empty cache folder, it times ``prove-jobs status --root SMALL --json`` (wall time and the peak
RSS of the command, from ``RUSAGE_CHILDREN`` of a fresh helper process per measure):

* before anything else (warm: its own cache filled);
* after one ``status --root BIG`` (whose time is shown too);
* after the big root's runs are deleted;

and the cache folder's files with their sizes after each. ``--repo``: the checkout whose
``prove_jobs`` the command runs (another one, e.g. the main branch's, to compare).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORDS = (b'{"lr": 0.01, "loss": 1.0, "time": 0.5, "iter": 10, "memory": 100, "step": 10}\n'
           b'{"aAcc": 80.0, "mIoU": 50.0, "mAcc": 60.0, "step": 10}\n')
MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
assert done.returncode == 0, done.stderr
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def plant(root: Path, count: int) -> None:
    for k in range(count):
        folder = root / f"V{k % 10}" / "baseline" / "cityscapes" / f"m{k:06d}" / "20260101_000000" / "vis_data"
        folder.mkdir(parents=True)
        (folder / "scalars.json").write_bytes(RECORDS)


def status(root: Path, env: dict[str, str], repeat: int = 1) -> tuple[float, float]:
    """``prove-jobs status --root ROOT --json``: the median seconds and the peak RSS (MB) of ``repeat`` runs."""
    command = [sys.executable, "-c", MEASURE, str(Path(sys.executable).parent / "prove-jobs"), "status", "--root",
               str(root), "--json"]
    seconds, peaks = [], []
    for _ in range(repeat):
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout.split()
        seconds.append(float(out[0]))
        peaks.append(int(out[1]) / 1024)
    return statistics.median(seconds), max(peaks)


def cache_files(cache: Path) -> str:
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    return ", ".join(f"{p.relative_to(cache)} {p.stat().st_size / 1e6:.2f} MB" for p in files) or "none"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50_000)
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose prove_jobs runs")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        small, big, cache = Path(tmp) / "small", Path(tmp) / "big", Path(tmp) / "cache"
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        env.update(XDG_CACHE_HOME=str(cache), PYTHONPATH=str(args.repo.resolve()))
        plant(small, 4)
        t0 = time.perf_counter()
        plant(big, args.runs)
        print(f"planted {args.runs} runs in {time.perf_counter() - t0:.1f} s; prove_jobs from {args.repo}")
        rows: list[tuple[str, float, float]] = []
        status(small, env)  # fills its cache
        rows.append(("status --root SMALL (4 runs), warm", *status(small, env, repeat=5)))
        rows.append((f"status --root BIG ({args.runs} runs), cold", *status(big, env)))
        print(f"cache after BIG: {cache_files(cache)}")
        rows.append(("status --root SMALL, after BIG", *status(small, env, repeat=5)))
        shutil.rmtree(big)
        big.mkdir()
        rows.append(("status --root SMALL, after BIG's runs were deleted", *status(small, env, repeat=5)))
        rows.append(("status --root BIG (empty now)", *status(big, env)))
        rows.append(("status --root SMALL, after that", *status(small, env, repeat=5)))
        print(f"cache at the end: {cache_files(cache)}")
        print(f"\n{'measure (median of 5; peak RSS: the highest)':<56} {'seconds':>8} {'peak MB':>8}")
        for name, seconds, mb in rows:
            print(f"{name:<56} {seconds:>8.3f} {mb:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
