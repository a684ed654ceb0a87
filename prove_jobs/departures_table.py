"""The departures listing as a rich table that fits the width it is given (``prove-jobs departures``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prove_jobs.departures import Layer, RunDepartures

KEY_WIDTH = 25  # the table keeps this much for the keys, wrapped after a dot: `train_dataloader.dataset.`
TABLE_VALUE_WIDTH = 22  # a value longer is shortened in the table


class DeparturesTable:
    """Key | Model zoo | Rendered | Changed by, titled with the run and its zoo config.

    Drawn for the width it is given (rich's ``options.max_width``): each value column takes up to a
    third of what the layer column leaves (at most ``TABLE_VALUE_WIDTH``), a longer value is shortened
    in the middle to one line (``--json`` has it whole), and the keys wrap after a dot in the rest.
    """

    def __init__(self, result: RunDepartures) -> None:
        self.result = result

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich import box
        from rich.table import Table

        result = self.result
        key_width = min(KEY_WIDTH, max((len(row.key) for row in result.rows), default=0))
        # 11: the table's edges and the gaps between its four columns
        layer_width = max(len(layer.value) for layer in Layer)
        value_width = max(10, min(TABLE_VALUE_WIDTH, (options.max_width - 11 - layer_width - key_width) // 2))
        table = Table(title=f"{result.run.name} vs {result.zoo_config}", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("Key", min_width=key_width)
        table.add_column("Model zoo", no_wrap=True, max_width=value_width)
        table.add_column("Rendered", no_wrap=True, max_width=value_width)
        table.add_column("Changed by", no_wrap=True)
        for row in result.rows:
            table.add_row(_Key(row.key), _cell(row.zoo, value_width), _cell(row.rendered, value_width), row.layer.value)
        yield table


class _Key:
    """A dotted key that wraps after a dot or before a ``[step]`` (continuation indented), never mid-name:
    it measures itself, so the table gives it what the terminal has left."""

    INDENT = "  "

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = [part for part in re.split(r"(?<=\.)|(?=\[)", text) if part]

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement(len(self.INDENT) + max(map(len, self.parts)), len(self.text))

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        lines = [""]
        for part in self.parts:
            if lines[-1].strip() and len(lines[-1]) + len(part) > options.max_width:
                lines.append(self.INDENT)
            lines[-1] += part
        for line in lines:  # a Text each: the console writes out a newline within a Text, as any control character
            yield Text(line, overflow="fold")


def no_departure_line(result: RunDepartures) -> str:
    return f"{result.run.name}: no departure from {result.zoo_config}"


def _cell(text: str | None, width: int) -> Any:
    from rich.text import Text

    if text is None:
        return Text("absent", style="dim")
    if len(text) > width:  # keep the end: a checkpoint's file name, a path's last folders
        head = width // 3
        text = text[:head] + "…" + text[-(width - head - 1):]
    return text  # the console reads no markup in it
