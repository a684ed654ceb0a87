"""Names planted in a shared data root reach neither a terminal nor report.md as anything but text.

A model folder's name, and a user, a job id and an error in ``prove_run.json``, carry an OSC 52
clipboard write, a screen clear, a carriage return, a backspace, a C1 CSI, a bidi override, rich
markup, and Markdown/HTML (``|``, a newline, backticks, ``<img onerror>``, a ``javascript:`` link).
The real console script runs on them, its output a pipe as in a log or ``| less``: any ESC in what
it prints came from disk (rich adds no colour to a pipe).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prove_jobs.identity import current_host
from prove_jobs.metadata import RunMeta, write_meta
from prove_jobs.runs import CONFIG_DIR, JOB_STDERR

BIN = Path(sys.executable).parent / "prove-jobs"
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # writes `rm -rf ~` into the reader's clipboard
HOSTILE = f"{OSC52}\x1b[2J\r\b\x9b\u202e"
MODEL = (f"m{HOSTILE}[bold]B[/bold][link=https://x.invalid]L[/link]"
         "|<img src=x onerror=alert(1)>`[t](javascript:alert(1))")
OTHER_MODEL = f"seg\nformer{OSC52}"  # short enough for a plot's title; a newline: a phantom row, a 2nd Markdown line
USER = f"eve{HOSTILE}[red]U[/red]|<img src=y onerror=alert(2)>"
JOB = f"77{OSC52}|<b>j</b>"
ERROR = f"CUDA out of memory{HOSTILE}\n| forged | row |\n<img src=z onerror=alert(3)> [x](javascript:alert(4))"
CURVE = [(20, 40.0, 80.0), (40, 50.0, 85.0)]
MAX_ITERS = 40


def _logs(run_dir: Path, last_iter: int) -> None:
    scalars = run_dir / "20260101_000000" / "vis_data" / "scalars.json"
    scalars.parent.mkdir(parents=True)
    lines = []
    for it in range(10, last_iter + 1, 10):
        lines.append({"lr": 0.01, "data_time": 0.01, "loss": 1.0, "time": 0.5, "iter": it, "memory": 100, "step": it})
        lines += [{"aAcc": aacc, "mIoU": miou, "mAcc": miou, "step": it} for i, miou, aacc in CURVE if i == it]
    scalars.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _run(root: Path, variant: str, model: str, *, failed: bool) -> Path:
    run_dir = root / variant / "baseline" / "cityscapes" / model
    run_dir.mkdir(parents=True)
    _logs(run_dir, 20 if failed else MAX_ITERS)
    ended = {"failed_at": 2.0e9, "error": ERROR} if failed else {"finished_at": 2.0e9}
    write_meta(run_dir, RunMeta(model=model, variant=variant, executor="local", host=current_host(), user=USER,
                                job_id=JOB, submitted_at=1.0e9, started_at=1.0e9 + 60, max_iters=MAX_ITERS,
                                **ended))  # type: ignore[arg-type]
    if failed:
        (run_dir / CONFIG_DIR).mkdir(exist_ok=True)
        (run_dir / CONFIG_DIR / JOB_STDERR).write_text(f"Traceback\n{HOSTILE}[bold]boom[/bold]\n")
    return run_dir


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """REF and V, each with the hostile model and one with a newline in its name; V's hostile run failed."""
    root = tmp_path / "root"
    for variant in ("REF", "V"):
        _run(root, variant, MODEL, failed=variant == "V")
        _run(root, variant, OTHER_MODEL, failed=False)
    return root


def cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "COLUMNS": "400"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def assert_shown_not_obeyed(text: str, written: str | None = "\\x1b]52;c;cm0gLXJmIH4K\\x07") -> None:
    """No escape sequence, carriage return, backspace, C1 control or bidi override left; the clipboard
    write shown as ``written`` (None: not looked for)."""
    for raw in ("\x1b", "\r", "\b", "\x9b", "\x07", "\u202e"):
        assert raw not in text, f"{raw!r} reached the output"
    assert written is None or written in text


def test_status_of_a_root_shows_planted_names_escaped(planted: Path, tmp_path: Path) -> None:
    done = cli("status", "--root", str(planted), tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_shown_not_obeyed(done.stdout + done.stderr)
    # rich markup in a name is text, not a style or a hyperlink; a newline in a name is no second row
    assert "[bold]B[/bold][link=https://x.invalid]L[/link]" in done.stdout
    assert "[red]U[/red]" in done.stdout
    assert "seg\\nformer" in done.stdout and "\\u202e" in done.stdout
    assert not any(line.strip().startswith("former") for line in done.stdout.splitlines())


def test_status_of_a_run_dir_shows_its_error_and_stderr_escaped(planted: Path, tmp_path: Path) -> None:
    run_dir = planted / "V" / "baseline" / "cityscapes" / MODEL
    done = cli("status", str(run_dir), tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert_shown_not_obeyed(out)
    assert "[bold]boom[/bold]" in done.stdout  # the job's stderr, markup and all, as text
    assert "CUDA out of memory" in done.stdout
    curves = cli("status", str(run_dir), "--curve", tmp=tmp_path)
    assert curves.returncode == 0, curves.stderr
    assert_shown_not_obeyed(curves.stdout + curves.stderr)


def test_status_watch_shows_planted_names_escaped(planted: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "400"}
    watching = subprocess.Popen([str(BIN), "status", "--root", str(planted), "--watch", "0.2"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watching.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 60  # two frames, however slow a loaded machine starts them
    while sum("Ctrl-C to quit" in line for line in list(lines)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    watching.send_signal(signal.SIGINT)
    reader.join(timeout=30)  # stdout read to its end: the last frame and the goodbye
    err = watching.stderr.read()  # type: ignore[union-attr]
    watching.wait(timeout=30)
    out = "".join(lines)
    assert out.count("Ctrl-C to quit") >= 2, err  # at least two frames
    assert_shown_not_obeyed(out + err)


def test_json_keeps_control_characters_as_json_escapes(planted: Path, tmp_path: Path) -> None:
    done = cli("status", "--root", str(planted), "--json", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\\u001b]52;c;" in done.stdout
    assert {row["model"] for row in json.loads(done.stdout)} == {MODEL, OTHER_MODEL}  # the names, exactly


def test_report_md_escapes_markdown_and_html(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = cli("report", "--root", str(planted), "--out", str(out), "--reference", "REF", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    printed = cli("report", "--root", str(planted), "--reference", "REF", tmp=tmp_path)
    assert printed.returncode == 0, printed.stderr
    for shown in (text, printed.stdout):
        assert_shown_not_obeyed(shown, "\\\\x1b\\]52;c;cm0gLXJmIH4K\\\\x07")  # a backslash, ] escaped
    assert_shown_not_obeyed(done.stderr + printed.stderr, None)
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "](javascript:" not in text.replace("\\](javascript:", "")  # every link bracket escaped
    assert "<b>" not in text and "[bold]B[/bold]" not in text  # markup as escaped text: \[bold\]
    assert "\\[bold\\]B\\[/bold\\]" in text
    for table in _tables(text):  # a planted | or newline adds no cell and no row
        widths = {_cells(row) for row in table}
        assert len(widths) == 1, table
    assert "eve" in text and "CUDA out of memory" in text  # the user and the error are there, escaped


def _tables(text: str) -> list[list[str]]:
    tables: list[list[str]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and (index == 0 or not lines[index - 1].startswith("|")):
            tables.append([])
        if line.startswith("|"):
            tables[-1].append(line)
    assert tables
    return tables


def _cells(row: str) -> int:
    """Cells of a GitHub Markdown table row: split at every | not escaped with a backslash."""
    count, escaped = 0, False
    for char in row.strip()[1:]:
        if char == "|" and not escaped:
            count += 1
        escaped = char == "\\" and not escaped
    return count


def test_report_terminal_shows_planted_names_escaped(planted: Path, tmp_path: Path) -> None:
    pytest.importorskip("plotext", reason="the report extra draws the curves")
    done = cli("report", "--root", str(planted), "--reference", "REF", "--terminal", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_shown_not_obeyed(done.stdout + done.stderr)
    assert "seg\\nformer\\x1b]52;c;cm0gLXJmIH4K\\x07: validation mIoU" in done.stdout  # the plot's title


def test_a_colour_terminal_gets_rich_colours_but_no_planted_sequence(planted: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "400", "FORCE_COLOR": "1"}
    done = subprocess.run([str(BIN), "status", "--root", str(planted)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" in done.stdout  # rich's own colours: this is a terminal to it
    for planted_sequence in ("\x1b]52", "\x1b[2J", "\r", "\b", "\x9b", "\u202e"):
        assert planted_sequence not in done.stdout + done.stderr
