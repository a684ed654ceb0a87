"""Issue 21: real training logs written by other people's trainings, read by the real command.

tests/fixtures/corpus holds work dirs as their authors' tools left them (mmengine 1.x and mmcv 0.x,
iteration and epoch loops, 1 to 22 starts; sources in tests/fixtures/corpus/SOURCES.md). For each,
tests/corpus_expect.py (a reading of our own, no prove_jobs code) says what a correct reader reports;
here `prove-jobs status RUN_DIR --json` and `status --root ROOT --json` must say the same.

The copies are aged (mtime 30 days ago): a git checkout gives every file the time of the checkout,
and a run whose logs were written minutes ago is `running` on that evidence alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from corpus_expect import CORPUS, RUNS, Expectation, expect

from prove_jobs.cli import main

AGE_S = 30 * 86400


def _status(argv: list[str]) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse or a refusal
            rc = exc.code if isinstance(exc.code, int) else 1
    try:
        rows = json.loads(out.getvalue())
    except ValueError:
        rows = None
    return rc, rows, err.getvalue()


def _aged_copy(dest: Path) -> Path:
    shutil.copytree(CORPUS, dest, copy_function=shutil.copy2)
    when = time.time() - AGE_S
    for path in sorted(dest.rglob("*"), reverse=True):
        os.utime(path, (when, when), follow_symlinks=False)
    os.utime(dest, (when, when))
    return dest


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _aged_copy(tmp_path_factory.mktemp("corpus") / "root")


@pytest.fixture(scope="module")
def root_rows(corpus_root: Path) -> list[dict[str, Any]]:
    rc, rows, err = _status(["status", "--root", str(corpus_root), "--json"])
    assert rc == 0, err
    assert isinstance(rows, list), err
    return rows


def _same_path(a: str | None, b: Path) -> bool:
    return a is not None and Path(a).resolve() == b.resolve()


def _close(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def mismatches(row: dict[str, Any], exp: Expectation) -> list[str]:
    """Field by field, what the row says wrong (empty: read right)."""
    bad: list[str] = []

    def check(field: str, ok: bool, want: object) -> None:
        if not ok:
            bad.append(f"{field}: got {row.get(field)!r}, want {want!r}")

    result = exp.counted[-1] if exp.counted else None
    last = next((s for s in reversed(exp.starts) if s.name == result), None)
    per_epoch = last.iters_per_epoch if last else None
    if exp.fmt.endswith("epoch"):
        whole = exp.max_epochs * per_epoch if exp.max_epochs and per_epoch else None
        iters = {exp.iter} | ({whole} if exp.finished and whole else set())
        check("iter", row.get("iter") in iters, f"{exp.iter} (global iteration; {whole} once the last epoch ended)")
        if "by_epoch" in row:  # the epoch keys of --json (docs/status.md): epoch numbers, not iterations
            check("by_epoch", row["by_epoch"] is True, True)
        if "epoch" in row:
            check("epoch", row["epoch"] == exp.epoch, exp.epoch)
        if "max_epochs" in row:
            check("max_epochs", row["max_epochs"] == exp.max_epochs, exp.max_epochs)
            check("max_iters", row.get("max_iters") in {whole, None}, f"{whole} or null, as max_epochs says")
        else:
            check("max_iters", row.get("max_iters") == whole,
                  f"{whole} ({exp.max_epochs} epochs x {per_epoch}), or max_epochs={exp.max_epochs}")
    else:
        check("iter", row.get("iter") == exp.iter, exp.iter)
        check("max_iters", row.get("max_iters") == exp.max_iters, exp.max_iters)
        for key in ("epoch", "max_epochs"):  # an iteration loop has no epochs to show
            check(key, row.get(key) is None, None)
        check("by_epoch", not row.get("by_epoch"), False)
    if exp.finished is True:
        check("state", row.get("state") == "completed", "completed")
    elif exp.finished is False or not exp.counted:
        check("state", row.get("state") not in {"completed", "running"}, "not completed (stopped: idle 30 days)")
    got_curve = [(int(p[0]), p[1]) for p in row.get("curve") or []]
    ok_curve = len(got_curve) == len(exp.curve) and all(
        gi == wi and _close(gv, wv, 0.01) for (gi, gv), (wi, wv) in zip(got_curve, exp.curve, strict=True))
    if not ok_curve:
        bad.append(f"curve: got {len(got_curve)} points {got_curve[:3]}...{got_curve[-2:]}, "
                   f"want {len(exp.curve)} {exp.curve[:3]}...{exp.curve[-2:]}")
    check("best_miou", _close(row.get("best_miou"), exp.best_miou, 0.01), exp.best_miou)
    check("last_miou", _close(row.get("last_miou"), exp.last_miou, 0.01), exp.last_miou)
    if exp.memory_mb is not None:
        check("memory_mb", row.get("memory_mb") == exp.memory_mb, exp.memory_mb)
    check("elapsed_s", _close(row.get("elapsed_s"), exp.elapsed_s, 1.0),
          f"{exp.elapsed_s} (starts {exp.counted})" if exp.elapsed_s is not None else None)
    check("model", row.get("model") not in {None, "", "config"} and (exp.name is None or row.get("model") == exp.name),
          exp.name or "the work dir's name, not 'config'")
    return bad


@pytest.mark.parametrize("key", list(RUNS))
def test_a_real_run_is_read_right(key: str, corpus_root: Path, root_rows: list[dict[str, Any]]) -> None:
    exp = expect(key, RUNS[key])
    run_dir = corpus_root / key
    rc, rows, err = _status(["status", str(run_dir), "--json"])
    problems: list[str] = []
    if rc != 0 or not isinstance(rows, list) or len(rows) != 1:
        problems.append(f"status RUN_DIR: rc {rc}, {err.strip()[:300]!r}")
        one = None
    else:
        one = rows[0]
        problems += [f"status RUN_DIR {p}" for p in mismatches(one, exp)]
    listed = [r for r in root_rows if _same_path(r.get("run_dir"), run_dir)]
    if len(listed) != 1:
        problems.append(f"status --root: listed {len(listed)} times")
    else:
        problems += [f"status --root {p}" for p in mismatches(listed[0], exp)]
        if one is not None and one.get("model") != listed[0].get("model"):
            problems.append(f"model differs: RUN_DIR {one.get('model')!r}, --root {listed[0].get('model')!r}")
    assert not problems, f"{key} ({exp.fmt}, {len(exp.starts)} starts):\n  " + "\n  ".join(problems)


def test_root_lists_every_run_and_no_start_as_a_run(corpus_root: Path, root_rows: list[dict[str, Any]]) -> None:
    """No run silently skipped; a start's `<ts>/` folder is no run of its own."""
    dirs = {key: (corpus_root / key).resolve() for key in RUNS}
    listed = [Path(r["run_dir"]).resolve() for r in root_rows if r.get("run_dir")]
    missing = sorted(key for key, path in dirs.items() if path not in listed)
    inside = sorted(str(p) for p in listed for d in dirs.values() if d in p.parents)
    assert not missing and not inside, f"not listed: {missing}; starts listed as runs: {inside}"


def test_the_expectations_read_the_corpus() -> None:
    """The independent reading itself: every run's facts as SOURCES.md states them."""
    facts = {key: expect(key, name) for key, name in RUNS.items()}
    dubai = facts["mmseg1x-dubai/DubaiDataset"]
    assert (dubai.iter, dubai.max_iters, dubai.finished, dubai.counted) == (8000, 8000, True, ["20230615_115844"])
    assert [s.kind for s in dubai.starts].count("test") == 2 and dubai.best_miou == 58.28
    assert dubai.elapsed_s == 3667
    potato = facts["mmseg0x-potato/Potato_segmentation"]
    assert potato.curve[0] == (200, 92.01) and potato.max_iters is None and potato.elapsed_s is None
    assert facts["mmdet-cat-testonly/rtmdet_tiny_1xb12-40e_cat"].iter is None
    flower = facts["mmcls0x-flower5/mobilenet-v2_flower5"]
    assert (flower.epoch, flower.max_epochs, flower.finished, len(flower.starts)) == (10, 10, True, 4)
    assert sum(len(e.starts) for e in facts.values()) >= 60
