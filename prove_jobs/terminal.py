"""All terminal output goes through here: tables and JSON to stdout, messages to stderr.

rich is imported on first use: a command that only prints JSON never loads it.

Whatever is shown comes from a shared data root that anyone in the group can write: a model folder's
name, a user, a job id, an error. The consoles here show its control characters written out
(:func:`prove_jobs.escape.visible`) and never read it as rich markup, whether it arrives as a
message, a table cell or a :class:`~rich.text.Text` of a renderable, so no caller has to remember to.
JSON needs nothing: ``json.dumps`` writes every control character as a ``\\u`` escape.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache, cached_property

from prove_jobs.escape import has_control, visible

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.segment import Segment
    from rich.text import Text

# rich falls back to 80 columns when stdout is a pipe or a file, which folds wide tables into
# unreadable slivers; a log file or `| less -S` is better served by full rows.
PIPE_WIDTH = 200


CURVE_WIDTH = 120  # wider, a text plot only stretches: a pipe's 200 columns would not fit a pasted report


class Terminal:
    def __init__(self, *, width: int | None = None) -> None:
        self._width = width

    @cached_property
    def out(self) -> Console:
        width = self._width
        if width is None and not sys.stdout.isatty() and not os.environ.get("COLUMNS"):  # set and empty: unset
            width = PIPE_WIDTH
        return _safe_console()(width=width, highlight=False, markup=False, emoji=False)

    @cached_property
    def err(self) -> Console:
        # soft_wrap: a message stays one line (greppable, and what the tests read), however narrow the terminal.
        return _safe_console()(stderr=True, highlight=False, markup=False, emoji=False, soft_wrap=True)

    def log_to_stderr(self, verbosity: int) -> None:
        """``-v``: the scheduler commands with their durations; ``-vv``: also every log file read."""
        if verbosity <= 0:
            return
        import logging

        handler = logging.StreamHandler(sys.stderr)

        class Visible(logging.Formatter):
            def formatMessage(self, record: logging.LogRecord) -> str:
                return visible(super().formatMessage(record))  # -vv names every file read: anyone's names

        handler.setFormatter(Visible("prove-jobs: %(message)s"))
        root = logging.getLogger("prove_jobs")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)

    def show(self, renderable: RenderableType) -> None:
        """A table: as rich draws it on a terminal; elsewhere without the trailing spaces that pad each
        line to the table's width (a table pasted into an issue or a chat stays tidy)."""
        if self.out.is_terminal:
            self.out.print(renderable)
            return
        with self.out.capture() as captured:
            self.out.print(renderable)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        sys.stdout.flush()

    def curves(self, draw: Callable[[int, bool], list[str]]) -> None:
        """Text plots from ``draw(width, colour)``, written as drawn (rich would take their colour codes apart)."""
        colour = self.out.is_terminal and not os.environ.get("NO_COLOR")
        for text in draw(min(self.out.width, CURVE_WIDTH), colour):
            sys.stdout.write(text.rstrip("\n") + "\n\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        """Plain text on stdout, never wrapped nor styled (log lines, paths, a job script): its own lines
        kept, any other control character written out."""
        for part in text.split("\n"):
            self.out.print(part, highlight=False, soft_wrap=True)

    def json_line(self, data: Any) -> None:
        """One compact JSON document on one line (``--watch --json``: a line per refresh)."""
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    def json(self, data: Any, *, finite: bool = False) -> None:
        """Plain write (rich would wrap long lines and add markup); a list has one item a line.

        One line per item keeps a list of runs greppable, and is written by json's C encoder
        (``indent`` takes the pure-Python one: 14 ms for 14 runs). ``finite``: a list's items are JSON objects
        whose NaN or infinity the C encoder refuses; only such an item is walked (``values.finite_document``).
        """
        if isinstance(data, list) and data:
            line = _finite_line if finite else json.dumps
            sys.stdout.write("[\n" + ",\n".join(line(item) for item in data) + "\n]\n")
        else:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")

    @contextlib.contextmanager
    def progress(self) -> Iterator[Callable[[str], None]]:
        """A live status line on stderr, for a command that waits: redrawn in place on a terminal;
        elsewhere (a log file, CI) written when it changes, at most once a minute."""
        if self.err.is_terminal:
            from rich.live import Live
            from rich.text import Text

            with Live(Text(""), console=self.err, transient=True, auto_refresh=False) as live:
                yield lambda text: live.update(Text(text, style="dim"), refresh=True)
            return
        shown, at = "", 0.0

        def write(text: str) -> None:
            nonlocal shown, at
            if text != shown and time.monotonic() - at >= 60:
                self.info(text)
                shown, at = text, time.monotonic()

        yield write

    @contextlib.contextmanager
    def transfer(self) -> Iterator[Callable[[str, int, int | None], None]]:
        """Download progress, told ``(file name, bytes so far, total or None)``: a rich bar per file on a
        terminal (drawn from the first call: nothing is shown when nothing downloads); elsewhere a line
        when a file starts, every 10 s, and when it is whole."""
        if self.err.is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            bar = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(), console=self.err)
            tasks: dict[str, Any] = {}

            def draw(name: str, done: int, total: int | None) -> None:
                if not tasks:
                    bar.start()
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done, total=total)

            try:
                yield draw
            finally:
                if tasks:
                    bar.stop()
            return
        said: dict[str, float] = {}

        def write(name: str, done: int, total: int | None) -> None:
            whole = total is not None and done >= total
            if name in said and not whole and time.monotonic() - said[name] < 10:
                return
            said[name] = time.monotonic()
            of = f" of {byte_size(total)}" if total is not None else ""
            self.info(f"fetching {name}: {byte_size(done)}{of}")

        yield write

    def info(self, text: str) -> None:
        if not self._plain(text):
            self.err.print(text)

    def success(self, text: str) -> None:
        if not self._plain(text):
            self.err.print(text, style="green")

    def warn(self, text: str) -> None:
        self._labelled("warning:", "yellow", text)

    def error(self, text: str) -> None:
        self._labelled("error:", "bold red", text)

    def _labelled(self, label: str, style: str, text: str) -> None:
        if self._plain(f"{label} {text}"):
            return
        from rich.text import Text

        self.err.print(Text.assemble((label, style), " ", text))

    def _plain(self, line: str) -> bool:
        """Write ``line`` to stderr as rich would, without rich, where rich would write it as it is: not to a
        terminal (rich's own test: ``TTY_COMPATIBLE``, ``FORCE_COLOR``, ``isatty``), no control character nor
        tab in it. Loading rich for one warning is a fifth of a warm ``report --root`` of a few hundred runs."""
        if "\t" in line or has_control(line):
            return False
        if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR"):
            return False
        try:
            if sys.stderr.isatty():
                return False
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):  # no stderr, or a closed one: rich says what it says
            return False
        return True


def byte_size(size: int) -> str:
    """``170.9 MB``, ``7.7 kB``, ``12 B``: decimal units, as rich's DownloadColumn shows them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"


@cache
def _safe_console() -> type[Console]:
    """rich's Console, showing control characters written out: a string (a message, a table cell, a title)
    before rich measures it, a :class:`~rich.text.Text` when it is drawn. Built on first use: rich is
    imported only by a command that draws."""
    from rich.console import Console
    from rich.text import Text

    class SafeConsole(Console):
        def render_str(self, text: str, **options: Any) -> Text:
            return super().render_str(visible(text), **options)

        def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
            if isinstance(renderable, Text) and has_control(renderable.plain):
                renderable = visible_text(renderable)
            return super().render(renderable, options)

    return SafeConsole


def visible_text(text: Text) -> Text:
    """A rich Text with its control characters written out, each piece in the style it had."""
    from rich.text import Span, Text

    shown = Text(justify=text.justify, overflow=text.overflow, no_wrap=text.no_wrap, end=text.end,
                 style=text.style, tab_size=text.tab_size)
    cuts = sorted({at for span in text.spans for at in (span.start, span.end)})
    for piece in text.divide(cuts):
        plain = visible(piece.plain)
        shown.append_text(Text(plain, spans=[Span(0, len(plain), span.style) for span in piece.spans]))
    return shown


def _finite_line(item: dict[str, Any]) -> str:
    try:
        return json.dumps(item, allow_nan=False)
    except ValueError:
        from prove_jobs.values import finite_document

        return json.dumps(finite_document(item))
