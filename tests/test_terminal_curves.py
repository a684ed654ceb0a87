"""Terminal mIoU curves: text of the size asked for, with or without colour; one line when plotext is missing."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest

from prove_jobs.errors import ProveJobsError
from prove_jobs.report.terminal_curves import Curve, draw_curves, integer_ticks

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BASE = Curve("segformer_mit-b0", ((0, 0.0), (4000, 21.3), (8000, 33.8), (12000, 38.9)),
             low=(0.0, 19.0, 31.2, 37.0), high=(0.0, 23.1, 35.5, 40.3))
AUG = Curve("segformer_mit-b0 +aug", ((0, 0.0), (4000, 24.0), (8000, 36.1)))
FAILED = Curve("segformer_mit-b0 -pretrain (failed)", ((0, 0.0), (4000, 9.5)), ended=True)


def draw(*curves: Curve, width: int = 80, height: int = 20, colour: bool = False, max_iters: int | None = 20000) -> str:
    pytest.importorskip("plotext", reason="terminal curves need the report extra")
    return draw_curves("segformer_mit-b0: validation mIoU", curves, width=width, height=height, max_iters=max_iters,
                       colour=colour)


def x_tick_labels(text: str) -> list[str]:
    """The labels on the line under the x axis's bottom edge (the one with └)."""
    lines = text.splitlines()
    bottom = next(n for n, line in enumerate(lines) if "└" in line)
    return lines[bottom + 1].split()


def test_two_curves_are_drawn_with_their_labels_in_a_legend() -> None:
    text = draw(BASE, AUG)
    assert "segformer_mit-b0: validation mIoU" in text
    legend = text.splitlines()[-1]  # both fit one 80-column line, each after its own marker
    assert "•• segformer_mit-b0" in legend and "++ segformer_mit-b0 +aug" in legend
    assert "mIoU (%)" in text and "iteration" in text
    assert "•" in "".join(text.splitlines()[:-1]) and "+" in "".join(text.splitlines()[:-1])  # the lines themselves


@pytest.mark.parametrize(("width", "height"), [(80, 20), (150, 30), (50, 12)])
@pytest.mark.parametrize("colour", [False, True])
def test_the_text_fits_the_size_asked_for(width: int, height: int, colour: bool) -> None:
    text = draw(BASE, AUG, FAILED, width=width, height=height, colour=colour)
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    assert len(lines) <= height and max(len(line) for line in lines) <= width, "\n".join(lines)


@pytest.mark.parametrize(("max_iters", "width", "last"),
                         [(20000, 80, 20000), (20000, 150, 20000), (None, 80, 12000), (12500, 40, 10000)])
def test_iteration_ticks_are_whole_numbers(max_iters: int | None, width: int, last: int) -> None:
    labels = x_tick_labels(draw(BASE, AUG, max_iters=max_iters, width=width))
    assert labels[0] == "0" and labels[-1] == str(last) and all(label.isdigit() for label in labels), labels


def test_a_few_iterations_get_a_tick_each() -> None:
    assert x_tick_labels(draw(Curve("short", ((0, 1.0), (1, 2.0), (3, 2.5))), max_iters=3)) == ["0", "1", "2", "3"]


def test_the_axis_reaches_the_last_point_past_max_iters() -> None:
    """A run trained past the iterations it was given (resumed with more): drawn whole, and quickly."""
    assert x_tick_labels(draw(BASE, max_iters=3))[-1] == "12000"


def test_integer_ticks_are_round_steps_that_fit() -> None:
    assert integer_ticks(40000, 72) == list(range(0, 40001, 5000))
    assert integer_ticks(3, 72) == [0, 1, 2, 3]
    assert integer_ticks(0, 72) == [0]
    assert integer_ticks(160000, 40) == [0, 50000, 100000, 150000]
    assert integer_ticks(160000, 30) == [0, 100000]  # 3 labels of 6 digits do not fit 30 columns


def test_an_ended_run_is_drawn_with_its_own_marker() -> None:
    text = draw(BASE, FAILED)
    assert "xx segformer_mit-b0 -pretrain (failed)" in text.splitlines()[-1]
    assert "x" in "".join(line.split("┤")[-1] for line in text.splitlines() if "┤" in line)  # on the canvas


def test_without_colour_there_is_no_escape_and_with_it_there_is() -> None:
    assert "\x1b" not in draw(BASE, AUG, FAILED, colour=False)
    assert "\x1b[" in draw(BASE, AUG, FAILED, colour=True)


def test_a_band_must_match_its_points() -> None:
    with pytest.raises(ValueError, match="low has 1 values for 2 points"):
        Curve("bad", ((0, 0.0), (10, 1.0)), low=(0.0,))


def test_without_plotext_one_line_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotext", None)  # an import of it raises ImportError
    with pytest.raises(ProveJobsError) as raised:
        draw_curves("t", [BASE], width=80, height=20)
    assert str(raised.value) == "terminal curves need plotext: pip install 'prove-jobs[report]'"


def test_the_legend_lists_variants_in_one_order_whatever_order_the_runs_come_in() -> None:
    """Issue 20: `status RUN_DIR --curve` (runs sorted by variant) and `report --terminal` (the sweep's order)
    listed the variants in different orders."""
    from types import SimpleNamespace

    from prove_jobs.report.terminal_curves import model_curves

    def status(variant: str, miou: float) -> Any:
        point = SimpleNamespace(iter=10, miou=miou)
        run = SimpleNamespace(model="m", variant=variant, seed=None)
        return SimpleNamespace(run=run, curve=[point, SimpleNamespace(iter=20, miou=miou + 1)], max_iters=20,
                               state=SimpleNamespace(value="completed"), seed=None)

    runs = [status("REF", 10.0), status("BS4", 20.0)]
    assert model_curves(runs, width=80, colour=False) == model_curves(runs[::-1], width=80, colour=False)
