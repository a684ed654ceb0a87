"""The dashboard: columns that fit the terminal, sparklines, filters, --curve, --watch."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BS16, OTHER, SWEEPS

from prove_jobs.cli import main
from prove_jobs.dashboard import COLUMNS, sparkline, status_table
from prove_jobs.spec import load_sweep
from prove_jobs.status import collect_status


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([10.0, 20.0, 15.0, None, 30.0]) == "▁▅▃█"
    assert sparkline([5.0, 5.0]) == "▁▁"
    assert sparkline([]) == ""
    assert len(sparkline([float(i) for i in range(40)], width=12)) == 12


def test_narrow_terminals_drop_whole_columns_by_priority(reference_root: Path) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=reference_root)
    statuses = collect_status(sweep.runs(variants=[BS16])).statuses
    wide = [c.header for c in status_table(statuses, width=250).columns]
    # a Seed column only where there are seeds, a Util column only where a run is training (has samples)
    assert wide == [c.header for c in COLUMNS if c.header not in ("Seed", "Util")]
    narrow = [c.header for c in status_table(statuses, width=80).columns]
    assert narrow[:2] == ["Model", "State"] and "mIoU" in narrow and "Node" not in narrow
    assert len(narrow) < len(wide)


def test_every_row_stays_on_one_line_at_any_width(reference_root: Path) -> None:
    from dataclasses import replace

    from rich.console import Console

    from prove_jobs.states import RunState

    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=reference_root)
    statuses = list(collect_status(sweep.runs(variants=[BS16])).statuses)
    # the longest state label there is: a resumed run with its restart count
    statuses[0] = replace(statuses[0], state=RunState.RUNNING, meta=replace(statuses[0].meta, restarts=2))
    for width in range(70, 201, 10):
        console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        table = status_table(statuses, width=width)
        table.caption = None  # the caption naming the columns left out may take lines of its own
        console.print(table)
        lines = [line for line in console.export_text().splitlines() if line.strip()]
        assert len(lines) == 2 + len(statuses), (width, lines)  # header, rule, one line per run
        assert "2 restarts" in lines[2] or width < 100, (width, lines[2])


def test_curve_and_filters(reference_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = str(SWEEPS / "cityscapes.toml")
    root = ["--data-root", str(reference_root)]
    assert main(["status", sweep, *root, "--curve", "--model", "segformer_mit-b3", "--variant", BS16]) == 0
    out = capsys.readouterr().out
    assert "WEIGHTS_CITYSCAPES/segformer_mit-b3" in out and "Completed" in out
    for row in ("2,000   57.78%   92.98%", "20,000   75.97%   95.58%"):
        assert row in out
    assert main(["status", sweep, *root, "--state", "lock_conflict", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["model"] for r in rows) == ["deeplabv3plus_r50", "hrnet_hr48"]
    assert all(r["lock_holder"]["user"] == OTHER for r in rows)
    assert main(["status", sweep, *root, "--user", OTHER, "--state", "completed", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 6
    run_dir = reference_root / BS16 / "baseline" / "cityscapes" / "mask2former_swin-b"
    assert main(["status", str(run_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["state"] == "running" and row["iter"] == 2500 and row["max_iters"] == 20000
    assert row["eta_s"] is not None and row["eta_s"] > 0


def test_watch_redraws_until_ctrl_c(reference_root: Path) -> None:
    # A real terminal (a pty): rich Live redraws in place only there.
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 160, 0, 0))  # rows, columns
    env = {**os.environ, "COLUMNS": "160", "LINES": "60", "TERM": "xterm-256color"}
    watch = subprocess.Popen(
        [sys.executable, "-m", "prove_jobs.cli", "status", str(SWEEPS / "cityscapes.toml"), "--data-root",
         str(reference_root), "--variant", BS16, "--watch", "0.3"],
        stdin=follower, stdout=follower, stderr=subprocess.PIPE, text=False, env=env,
        # as at a terminal: a test runner started in the background (`cmd &`) ignores SIGINT,
        # its children inherit that, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(follower)
    screen = b""

    def read_until(done: Callable[[], bool], timeout_s: float) -> None:
        # Keep draining the pty: a child blocked on a full terminal buffer cannot act on Ctrl-C.
        nonlocal screen
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    return
                screen += chunk

    read_until(lambda: screen.count(b"Ctrl-C to quit") >= 3, 60)
    watch.send_signal(signal.SIGINT)
    read_until(lambda: watch.poll() is not None, 30)
    _, err = watch.communicate(timeout=10)
    os.close(leader)
    assert watch.returncode == 0, err
    assert b"Traceback" not in err
    assert screen.count(b"Ctrl-C to quit") >= 3, screen[-3000:]  # redrawn, not printed once
    assert b"\x1b[" in screen  # cursor movement: in place
    assert b"Lock conflict" in screen and OTHER.encode() in screen


def test_state_text_counts_restarts(tmp_path: Path) -> None:
    from prove_jobs.dashboard import state_text
    from prove_jobs.metadata import RunMeta
    from prove_jobs.runs import Run
    from prove_jobs.states import RunState
    from prove_jobs.status import RunStatus

    run = Run("m", "V", "baseline", "cityscapes", tmp_path)

    def text(state: RunState, restarts: int) -> str:
        meta = RunMeta(model="m", variant="V", restarts=restarts)
        return state_text(RunStatus(run, state, 20, 40, (), meta)).plain

    assert text(RunState.REQUEUED, 1) == "🔁 Requeued @ 20/40 · 1 restart"
    assert text(RunState.RUNNING, 2) == "🔄 Running @ 20/40 · 2 restarts"
    assert text(RunState.RUNNING, 0) == "🔄 Running @ 20/40"  # the report's own wording
