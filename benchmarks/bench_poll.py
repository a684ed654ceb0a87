"""Benchmark: how often ``prove-jobs status --root ROOT --watch 2`` asks the scheduler (issue 23, item 5).

Usage::

    .venv/bin/python benchmarks/bench_poll.py [--runs 50] [--watch 2] [--seconds 60] [--code DIR]
                                              [-- STATUS_OPTION ...]

Plants ``--runs`` started SLURM array tasks (one logged iteration each) under a temporary root, puts a fake
``squeue`` and ``sacct`` first on PATH (tests/fake_scheduler.py: each call is logged, squeue answers
RUNNING), runs the watch of the code in ``--code`` (default: this checkout; an older checkout measures
"before") for ``--seconds`` of real time with its output to a file, then Ctrl-C. Prints the frames drawn,
the scheduler calls, and both scaled to an hour.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--watch", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose prove_jobs runs the watch")
    parser.add_argument("extra", nargs="*", help="more status options (after --), e.g. --scheduler-every 10")
    args = parser.parse_args()

    from fake_scheduler import calls, install, path_with, slurm_runs

    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
        folder = Path(tmp)
        slurm_runs(folder / "root", args.runs)
        fake = install(folder / "bin")
        env = {**os.environ, "PATH": path_with(fake), "PYTHONPATH": str(args.code.resolve()),
               "XDG_CACHE_HOME": str(folder / "cache"), "COLUMNS": "200"}
        with open(folder / "out", "w") as out:
            watch = subprocess.Popen([sys.executable, "-m", "prove_jobs.cli", "status", "--root",
                                      str(folder / "root"), "--watch", f"{args.watch:g}", *args.extra],
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
            started = time.monotonic()
            time.sleep(args.seconds)
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=60)
            seconds = time.monotonic() - started
        text = (folder / "out").read_text()
        frames = text.count("Ctrl-C to quit")
        squeue, sacct = len(calls(fake, "squeue")), len(calls(fake, "sacct"))
        hour = 3600 / seconds
        print(f"code {args.code}: {args.runs} runs, --watch {args.watch:g} {' '.join(args.extra)}, {seconds:.0f} s")
        print(f"  frames {frames} ({frames * hour:.0f}/h), squeue {squeue}, sacct {sacct}: "
              f"{(squeue + sacct) * hour:.0f} scheduler calls/h")
        footer = [line for line in text.splitlines() if "Ctrl-C to quit" in line]
        print(f"  last footer: {footer[-1].strip() if footer else '-'}")
        return 0 if watch.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
