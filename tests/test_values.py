"""Values are checked where they are read (issue 19): one planted value in the shared root is one warning about
that run, never a traceback for everyone; statistics that would divide by nothing say n/a; JSON never holds
NaN; seed folders are canonical.

Each case goes through the real CLI (``status --root DIR --json``, ``status RUN_DIR``, ``report --root``,
``report SWEEP --format json``), its JSON read by a strict parser (NaN and Infinity refused). The logs are
written by mmengine's own LocalVisBackend (conftest.write_logs); the planted value is then put into them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import claim, demo_sweep_with, make_run, write_logs

from prove_jobs.cli import main
from prove_jobs.runs import Run, RunMeta, current_host, current_user, write_meta

pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")

MAX_ITERS = 1000  # write_logs logs every 500 iterations: a train record at 500 and at 1000
DIGITS_400 = "1" * 400
NESTED = "[" * 100_000 + "]" * 100_000


def refuse(constant: str) -> None:
    raise ValueError(f"{constant} in JSON output: a strict parser refuses it")


def strict(text: str) -> Any:
    return json.loads(text, parse_constant=refuse)


def scalars(run: Run) -> Path:
    return run.run_dir / "20260101_000000" / "vis_data" / "scalars.json"


def finished(run: Run, *, curve: list[tuple[int, float, float]] | None = None, seconds: float = 40.0,
             **meta: object) -> Run:
    """``run`` trained to MAX_ITERS by mmengine and recorded as completed by prove-jobs."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_logs(run.run_dir, MAX_ITERS, MAX_ITERS, curve or [(500, 40.0, 85.0), (1000, 50.0, 90.0)], seconds)
    claim(run, started_at=time.time() - 100, finished_at=time.time(), max_iters=MAX_ITERS, **meta)
    return run


def good_and_bad(root: Path) -> tuple[Run, Run]:
    """Two completed runs under ``root``: the first stays as written, the test plants a value in the second."""
    good = finished(make_run(root))
    bad = dataclasses.replace(make_run(root / "other"), data_root=root, model="demo_segformer_tiny")
    return good, finished(bad)


def plant(path: Path, pick: str, key: str, raw: str) -> None:
    """Write ``raw`` (JSON text, as it is) as ``key`` of the last line of ``path`` that has ``pick``."""
    lines = path.read_text().splitlines()
    index = max(i for i, line in enumerate(lines) if f'"{pick}"' in line)
    record = json.loads(lines[index])
    record[key] = "@@planted@@"
    lines[index] = json.dumps(record).replace('"@@planted@@"', raw)
    path.write_text("\n".join(lines) + "\n")


def plant_document(path: Path, key: str, raw: str) -> None:
    """Write ``raw`` (JSON text, as it is) as ``key`` of the JSON object in ``path``."""
    document = json.loads(path.read_text())
    document[key] = "@@planted@@"
    path.write_text(json.dumps(document, indent=2).replace('"@@planted@@"', raw))


def status_root(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``status --root ROOT --json``: exit 0, the rows by model (strictly parsed), and the warning lines."""
    code = main(["status", "--root", str(root), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = strict(out.out)
    return {row["model"]: row for row in rows}, [line for line in out.err.splitlines() if line.strip()]


def assert_intact(row: dict[str, Any]) -> None:
    """The good run, as it was written: completed, its curve and its mIoU, nothing to say."""
    assert row["state"] == "completed" and row["iter"] == MAX_ITERS and row["last_miou"] == 50.0
    assert row["curve"] == [[500, 40.0, 85.0], [1000, 50.0, 90.0]] and row["notes"] == [] and row["lr"] == 0.01


# --- one planted value in a log ----------------------------------------------------------------------

LOG_CASES = {  # name: (the line it goes into (a key it has), key, raw JSON, the field the warning names)
    "iteration of 400 digits": ("loss", "iter", DIGITS_400, "iter"),
    "LR of 400 digits": ("loss", "lr", DIGITS_400, "lr"),
    "NaN mIoU": ("mIoU", "mIoU", "NaN", "mIoU"),
    "infinite mIoU": ("mIoU", "mIoU", "Infinity", "mIoU"),
    "negative iteration": ("loss", "iter", "-5", "iter"),
    "boolean iteration": ("loss", "iter", "true", "iter"),
    "time as text": ("loss", "time", '"fast"', "time"),
    "memory of 4,000 digits": ("loss", "memory", "9" * 4000, "memory"),
}


@pytest.mark.parametrize("case", LOG_CASES)
def test_one_planted_log_value_is_one_warning_and_the_other_run_is_intact(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pick, key, raw, field = LOG_CASES[case]
    good, bad = good_and_bad(tmp_path)
    plant(scalars(bad), pick, key, raw)
    rows, warnings = status_root(tmp_path, capsys)
    assert_intact(rows[good.model])
    assert len(warnings) == 1 and f"unreadable: {field} in {scalars(bad)}" in warnings[0], warnings
    row = rows[bad.model]
    assert row["state"] == "completed" and any(f"unreadable: {field}" in note for note in row["notes"])
    if field == "mIoU":  # left out, and why beside it
        assert row["last_miou"] is None and row["last_miou_note"].endswith("in scalars.json")
        assert row["curve"][-1] == [1000, None, 90.0]
    if field == "lr":
        assert row["lr"] is None and row["lr_note"].startswith("a number of 400 digits")

    # `status RUN_DIR`: the table, and the one warning
    assert main(["status", str(bad.run_dir)]) == 0
    out = capsys.readouterr()
    assert [line for line in out.err.splitlines() if "warning" in line] == [
        line for line in out.err.splitlines() if f"unreadable: {field}" in line]
    assert "demo_segformer_tiny" in out.out and "Traceback" not in out.err


def test_a_log_line_nested_100k_deep_is_one_unparsable_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = good_and_bad(tmp_path)
    with scalars(bad).open("a") as handle:
        handle.write('{"lr": ' + NESTED + "}\n")
    rows, warnings = status_root(tmp_path, capsys)
    assert_intact(rows[good.model])
    assert len(warnings) == 1 and "unparsable line" in warnings[0]


def test_a_nan_or_infinite_loss_is_null_in_json_with_the_reason_beside_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = good_and_bad(tmp_path)
    plant(scalars(bad), "loss", "loss", "Infinity")
    rows, warnings = status_root(tmp_path, capsys)
    assert_intact(rows[good.model])
    assert rows[bad.model]["loss"] is None and rows[bad.model]["loss_note"] == "infinite"
    assert len(warnings) == 1 and "non-finite loss" in warnings[0]


# --- one planted value in prove_run.json, for every field ---------------------------------------------

def wrong_values(meta_field: dataclasses.Field[Any]) -> dict[str, str]:
    """JSON texts of the wrong type, or out of range, for a field of RunMeta: judged from its annotation."""
    kind = str(meta_field.type)
    wrong = {"boolean": "true", "list": "[1]", "object": '{"a": 1}', "NaN": "NaN", "infinity": "Infinity"}
    if kind.startswith("str"):
        wrong.update(number="7", huge=DIGITS_400)
    if kind.startswith("int"):
        wrong.update(text='"7"', fraction="1.5", negative="-1", huge=DIGITS_400)
    if kind.startswith("float"):
        wrong.update(text='"yesterday"', negative="-1", huge=DIGITS_400)
    if "None" not in kind and meta_field.name not in ("model", "variant"):
        wrong["null"] = "null"
    if meta_field.name == "lock_mode":
        wrong["unknown lock mode"] = '"flock"'
    return wrong


META_FIELDS = [f for f in dataclasses.fields(RunMeta)]


@pytest.mark.parametrize("meta_field", META_FIELDS, ids=[f.name for f in META_FIELDS])
def test_each_wrong_value_in_each_field_of_prove_run_json_is_one_warning(
        meta_field: dataclasses.Field[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = finished(make_run(tmp_path))
    wrong = wrong_values(meta_field)
    planted = {}
    for index, (name, raw) in enumerate(wrong.items()):
        run = dataclasses.replace(good, model=f"planted{index}")
        run.run_dir.mkdir(parents=True)
        path = run.run_dir / "prove_run.json"
        claim(run, started_at=time.time() - 100)
        plant_document(path, meta_field.name, raw)
        planted[run.model] = (name, path)
    rows, warnings = status_root(tmp_path, capsys)
    assert_intact(rows[good.model])
    assert len(warnings) == len(wrong), warnings
    for model, (name, path) in planted.items():
        said = [w for w in warnings if f"unreadable: {meta_field.name} in {path} (" in w]
        assert len(said) == 1, (name, warnings)
        assert rows[model]["user"] is None  # nothing of that file is used


def test_every_field_of_run_meta_has_a_type_and_a_range() -> None:
    from prove_jobs.values import META_FIELDS as CHECKED

    assert set(CHECKED) == {f.name for f in META_FIELDS}


def test_prove_run_json_nested_100k_deep_is_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = good_and_bad(tmp_path)
    (bad.run_dir / "prove_run.json").write_text('{"model": "x", "variant": "y", "error": ' + NESTED + "}")
    rows, warnings = status_root(tmp_path, capsys)
    assert_intact(rows[good.model])
    assert len(warnings) == 1 and "corrupt run metadata (nested too deep)" in warnings[0]
    assert main(["status", str(bad.run_dir)]) == 0
    assert "nested too deep" in capsys.readouterr().err


# --- prove_conflicts.json -----------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "raw"), [("since", "NaN"), ("since", DIGITS_400), ("pid", "true"),
                                          ("user", "[1]"), ("holder", NESTED)])
def test_a_planted_value_in_the_conflicts_record_is_one_warning(
        key: str, raw: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = good_and_bad(tmp_path)
    holder = {"user": "bob", "host": current_host(), "executor": "local", "job_id": "9", "pid": 1, "since": 1.0e9,
              "sweep": "s.toml", "stale": True}
    record = {current_user(): {"holder": holder, "at": 1.0e9, "sweep": "s.toml"}}
    text = json.dumps(record)
    if key == "holder":
        text = text.replace(json.dumps(holder), NESTED)
    else:
        text = text.replace(f'"{key}": {json.dumps(holder[key])}', f'"{key}": {raw}')
    write_meta(bad.run_dir, RunMeta(model=bad.model, variant=bad.variant, executor="local", host=current_host(),
                                    user="bob", submitted_at=1.0e9, failed_at=1.0e9 + 5))
    (bad.run_dir / "prove_conflicts.json").write_text(text)
    rows, warnings = status_root(tmp_path, capsys)
    assert_intact(rows[good.model])
    if key == "holder":  # not JSON that can be read: the hint is lost, as for any broken record
        assert warnings == [] and rows[bad.model]["state"] == "failed"
        return
    assert len(warnings) == 1 and f"unreadable: {current_user()}.holder.{key} in" in warnings[0], warnings
    assert rows[bad.model]["state"] == "failed" and rows[bad.model]["lock_holder"] is None
