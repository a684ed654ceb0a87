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
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import claim, demo_sweep_with, make_run, write_logs

from prove_jobs.cli import main
from prove_jobs.identity import current_host, current_user
from prove_jobs.metadata import RunMeta, write_meta
from prove_jobs.runs import Run

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


# --- the report: recorded configs, statistics, times ---------------------------------------------------

def demo_runs(root: Path, sweep: Path, mious: dict[tuple[str, str, int | None], float] | None = None,
              seconds: float = 40.0) -> list[Run]:
    """Every run of ``sweep`` under ``root`` completed, its final mIoU from ``mious`` (else 50)."""
    from prove_jobs.spec import load_sweep

    loaded = load_sweep(sweep, data_root=root)
    runs = loaded.runs()
    for run in runs:
        final = (mious or {}).get((run.model, run.variant, run.seed), 50.0)
        finished(run, curve=[(500, 40.0, 85.0), (1000, final, 90.0)], seconds=seconds,
                 seed=loaded.training_seed(run))
    return runs


def report_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], list[str]]:
    code = main(["report", *args, "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return strict(out.out), [line for line in out.err.splitlines() if line.strip()]


def report_md(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["report", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert re.search(r"\bnan\b|\binf\b", out.out, re.IGNORECASE) is None
    return out.out


CONFIG = """
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval=500)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr={lr}, momentum=0.9))
train_dataloader = dict(batch_size={batch})
"""


@pytest.mark.parametrize(("field", "iters", "batch"), [
    ("max_iters", "9" * 4000, "2"), ("batch_size", "1000", "0x" + "f" * 4000), ("max_iters", "-5", "2")])
def test_a_recorded_config_with_numbers_of_4000_digits_is_one_warning(
        field: str, iters: str, batch: str, tmp_path: Path, templates_copy: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sweep = demo_sweep_with(tmp_path, templates_copy)
    runs = demo_runs(tmp_path / "runs", sweep)
    for run in runs:
        (run.run_dir / "prove").mkdir(exist_ok=True)
        (run.run_dir / "prove" / "config.py").write_text(CONFIG.format(iters=1000, lr=0.01, batch=2))
    planted = runs[0].run_dir / "prove" / "config.py"
    planted.write_text(CONFIG.format(iters=iters, lr=0.01, batch=batch))
    args = [str(sweep), "--data-root", str(tmp_path / "runs")]
    document, warnings = report_json(args, capsys)
    assert len(warnings) == 1 and f"unreadable: {field} in {planted}" in warnings[0], warnings
    assert document["configurations"][runs[0].variant]["Iterations"] == "1,000"  # the other run's
    assert len(document["runs"]) == len(runs) and all(r["state"] == "completed" for r in document["runs"])
    report_md(args, capsys)


def seeds_sweep(folder: Path, templates: Path) -> Path:
    return demo_sweep_with(folder, templates, "seeds.toml", **{
        "seed = 0": "", 'variants = ["DEMO_REF", "DEMO_BS4"]': 'variants = ["DEMO_REF", "DEMO_BS4"]\nseeds = [0, 1]'})


def test_two_seeds_at_miou_0_and_1e_90_have_no_interval(tmp_path: Path, templates_copy: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    sweep = seeds_sweep(tmp_path, templates_copy)
    mious = {(m, v, k): (0.0 if k == 0 else 1e-90) for m in ("demo_fcn_r18_tiny", "demo_segformer_tiny")
             for v in ("DEMO_REF", "DEMO_BS4") for k in (0, 1)}
    demo_runs(tmp_path / "runs", sweep, mious)
    args = [str(sweep), "--data-root", str(tmp_path / "runs")]
    document, _ = report_json(args, capsys)
    for result in document["results"]:
        assert result["difference_ci95"] is None and result["verdict"] == "n/a (no spread between seeds)"
    assert "n/a (no spread between seeds)" in report_md(args, capsys)


def test_a_nan_miou_reaches_no_table_and_no_family_average(tmp_path: Path, templates_copy: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    sweep = demo_sweep_with(tmp_path, templates_copy)
    runs = demo_runs(tmp_path / "runs", sweep, {("demo_fcn_r18_tiny", "DEMO_BS4", None): 48.0,
                                                ("demo_segformer_tiny", "DEMO_BS4", None): 46.0})
    nan_run = next(r for r in runs if r.model == "demo_segformer_tiny" and r.variant == "DEMO_BS4")
    plant(scalars(nan_run), "mIoU", "mIoU", "NaN")
    args = [str(sweep), "--data-root", str(tmp_path / "runs")]
    document, warnings = report_json(args, capsys)
    assert len(warnings) == 1 and f"unreadable: mIoU in {scalars(nan_run)}" in warnings[0]
    assert all(math.isfinite(v) for v in document["family_averages"].values())
    assert document["family_averages"]["all"] == -2.0  # the fcn's -2 points; the segformer has no final mIoU
    row = next(r for r in document["runs"] if r["model"] == nan_run.model and r["variant"] == nan_run.variant)
    assert row["last_miou"] is None and row["last_miou_note"] == "not a number in scalars.json"
    md = report_md(args, capsys)
    assert "+nan" not in md and "-2.00 pts" in md
    assert main(["status", str(sweep), "--data-root", str(tmp_path / "runs")]) == 0  # the table
    assert "Traceback" not in capsys.readouterr().err


def test_all_zero_times_say_n_a(tmp_path: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = demo_sweep_with(tmp_path, templates_copy)
    demo_runs(tmp_path / "runs", sweep, seconds=0.0)
    args = [str(sweep), "--data-root", str(tmp_path / "runs")]
    document, _ = report_json(args, capsys)
    assert document["times"] and all(t["seconds"] == 0.0 and t["speedup_vs_reference"] is None
                                      and t["minutes_per_point"] == 0.0 for t in document["times"])
    report_md(args, capsys)
    for run in demo_runs(tmp_path / "other", sweep):  # the reference timed, the other variant not
        if run.variant == "DEMO_BS4":
            scalars(run).write_text(scalars(run).read_text().replace('"time": 0.04,', '"time": 0.0,'))
    document, _ = report_json([str(sweep), "--data-root", str(tmp_path / "other")], capsys)
    bs4 = [t for t in document["times"] if t["variant"] == "DEMO_BS4"]
    assert bs4 and all(t["seconds"] == 0.0 and t["speedup_vs_reference"] is None for t in bs4)
    assert "n/a" in report_md([str(sweep), "--data-root", str(tmp_path / "other")], capsys)


def test_a_variants_first_run_without_an_lr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    runs = []
    for variant in ("A_REF", "B_BIG"):
        for model in ("m1", "m2"):
            run = Run(model=model, variant=variant, method="baseline", dataset="cityscapes", data_root=root)
            finished(run)
            (run.run_dir / "prove").mkdir()
            lr = "0.02" if variant == "B_BIG" else "0.01"
            text = CONFIG.format(iters=1000, lr=lr, batch=2)
            if model == "m1" or variant == "B_BIG":  # A_REF's first run recorded no LR, B_BIG's none
                text = text.replace(f"lr={lr}, ", "")
            (run.run_dir / "prove" / "config.py").write_text(text)
            runs.append(run)
    document, warnings = report_json(["--root", str(root)], capsys)
    assert warnings == [] and len(document["runs"]) == 4
    # issue 21: not known is ? (null in JSON), with a note naming what was looked for, never n/a nor 0
    assert {v: c["Base LR"] for v, c in document["configurations"].items()} == {"A_REF": "0.01", "B_BIG": None}
    assert "| **Base LR** | 0.01 | ? |" in report_md(["--root", str(root)], capsys)
    assert "B_BIG (m1 and m2): lr: no optim_wrapper.optimizer.lr in prove/config.py" in document["configuration_notes"]


# --- seed folders are canonical -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["seed01", "seed2\n", "seed1 ", "seed\u0661"])
def test_a_seed_folder_not_named_as_the_sweep_writes_it_is_one_warning_and_no_run(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_run(tmp_path)
    seeded = [finished(dataclasses.replace(model, seed=k), seed=k) for k in (0, 1)]
    planted = dataclasses.replace(model, path=model.run_dir / name)
    finished(planted, seed=1)  # a copy of seed 1's run, under a name prove-jobs never writes
    rows = strict_rows(["status", "--root", str(tmp_path), "--json"], capsys)
    assert sorted((r["seed"], r["run_dir"]) for r in rows[0]) == [(r.seed, str(r.run_dir)) for r in seeded]
    assert all(r["state"] == "completed" and r["last_miou"] == 50.0 for r in rows[0])
    assert len(rows[1]) == 1 and ascii(name) in rows[1][0] and "not a seed folder" in rows[1][0], rows[1]

    code = main(["report", "--root", str(tmp_path), "--format", "json"])
    out = capsys.readouterr()
    assert code == 0 and len(strict(out.out)["runs"]) == 2
    assert [line for line in out.err.splitlines() if line.strip()] == rows[1]


def strict_rows(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, Any]], list[str]]:
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return strict(out.out), [line for line in out.err.splitlines() if line.strip()]
