"""Issue 24: the command line stays thin (each command parses, calls one library function and prints what
it returned), and one filter names runs by model, variant and seed everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

from prove_jobs.run_filter import RunFilter
from prove_jobs.runs import Run

CLI = Path(__file__).resolve().parent.parent / "prove_jobs" / "cli"
MAX_FUNCTION_LINES = 25  # its docstring aside
MAX_MODULE_LINES = 400


def _function_lines(path: Path) -> dict[str, int]:
    lengths = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
            doc_lines = body[0].lineno - node.body[0].lineno if body is not node.body else 0
            lengths[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1 - doc_lines
    return lengths


def test_no_cli_function_is_long_and_no_cli_module_is_big() -> None:
    lengths = {name: n for path in CLI.glob("*.py") for name, n in _function_lines(path).items()}
    assert {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES} == {}
    sizes = {path.name: len(path.read_text().splitlines()) for path in CLI.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def _run(model: str, variant: str, seed: int | None = None) -> Run:
    return Run(model=model, variant=variant, method="baseline", dataset="cityscapes", data_root=Path("/d"), seed=seed)


def test_one_run_filter_names_runs_by_model_variant_and_seed() -> None:
    a, b, seeded = _run("fcn", "REF"), _run("psp", "BS8"), _run("fcn", "BS8", seed=2)
    assert RunFilter().apply([a, b, seeded]) == [a, b, seeded]
    assert RunFilter.of(["fcn"]).apply([a, b, seeded]) == [a, seeded]
    assert RunFilter.of(variants=["BS8"], seeds=[2]).apply([a, b, seeded]) == [seeded]
    # a one-seed variant's run names no seed in its folder: the seed it trains with is the sweep's or its metadata's
    assert not RunFilter.of(seeds=[0]).matches(a) and RunFilter.of(seeds=[0]).matches(a, seed=0)
    assert RunFilter.of(["fcn"], seeds=[2]).by_folder() == RunFilter.of(["fcn"])


def test_the_outcomes_commands_print_are_typed() -> None:
    from prove_jobs.control import Unlocked, WaitOutcome
    from prove_jobs.errors import RunError
    from prove_jobs.skip import SkipReason, finished

    a, b = _run("fcn", "REF"), _run("psp", "REF")
    assert WaitOutcome(0, []).start_line() == "nothing to wait for: no run was asked for"
    assert WaitOutcome(2, []).start_line() == "nothing to wait for: none of these 2 run(s) has been submitted"
    assert WaitOutcome(2, [a]).start_line() == "waiting for 1 run(s) (1 never submitted)..."
    assert WaitOutcome(2, [a, b]).start_line() == "waiting for 2 run(s)..."
    assert not Unlocked(Path("/r"), False, "no claim").live and Unlocked(Path("/r"), False, "held by bob: live").live
    skip = finished(a, None, RunError(f"{a.run_dir}: holds iter_40.pth, a finished run; nothing submitted"))
    assert skip.reason is SkipReason.FINISHED and skip.short == skip.detail
