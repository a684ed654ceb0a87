"""All terminal output goes through here: tables and JSON to stdout, messages to stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console, RenderableType

# rich falls back to 80 columns when stdout is a pipe or a file, which folds wide tables into
# unreadable slivers; a log file or `| less -S` is better served by full rows.
PIPE_WIDTH = 200


class Terminal:
    def __init__(self, *, width: int | None = None) -> None:
        if width is None and not sys.stdout.isatty() and "COLUMNS" not in os.environ:
            width = PIPE_WIDTH
        self.out = Console(width=width, highlight=False)
        # soft_wrap: a message stays one line (greppable, and what the tests read), however narrow the terminal.
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def show(self, renderable: RenderableType) -> None:
        self.out.print(renderable)

    def line(self, text: str) -> None:
        """Plain text on stdout, never wrapped nor styled (log lines, paths)."""
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    def json(self, data: Any) -> None:
        # Plain write: rich would wrap long lines and add markup.
        sys.stdout.write(json.dumps(data, indent=2) + "\n")

    def info(self, text: str) -> None:
        self.err.print(text, markup=False)

    def success(self, text: str) -> None:
        self.err.print(f"[green]{_escape(text)}[/green]")

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {_escape(text)}")

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/bold red] {_escape(text)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
