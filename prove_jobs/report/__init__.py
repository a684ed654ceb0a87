"""The comparison report the group used to write by hand, built from the runs' statuses.

``build_report`` turns a sweep's statuses into a :class:`Report` (plain data, also the
``--format json`` output); ``markdown.render_markdown`` writes it the way
``cityscapes-training-comparison.md`` does; ``plots.write_plots`` draws the mIoU-vs-iteration
PNGs (matplotlib, the optional ``report`` extra, imported only there).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.plan import configuration_rows
from prove_jobs.runs import Run
from prove_jobs.spec import Sweep, Variant
from prove_jobs.status import RunState, RunStatus

_FAMILY = re.compile(r"^prove_family\s*=\s*['\"](\w+)['\"]", re.MULTILINE)


@dataclass(frozen=True)
class RunTime:
    """One completed run's training time, and what it bought."""

    model: str
    variant: str
    seconds: float
    miou: float
    minutes_per_point: float  # run time per 1 % mIoU
    speedup_vs_reference: float | None  # reference time / this time
    gpu_hours: float | None = None  # the logs' span times the GPUs the job asked for (as `status`)


@dataclass
class Report:
    """Everything the comparison report says, computed once from the runs' statuses."""

    sweep: str
    reference: str
    variants: list[Variant]
    statuses: list[RunStatus]
    families: dict[str, str]  # model -> family tag of its template ("cnn", "transformer", ...)
    sweep_file: str = ""
    generated_at: float = 0.0
    differences: dict[str, float] = field(default_factory=dict)  # model -> best non-reference - reference
    times: list[RunTime] = field(default_factory=list)

    def status(self, model: str, variant: str) -> RunStatus | None:
        return next((s for s in self.statuses if s.run.model == model and s.run.variant == variant), None)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(s.run.model for s in self.statuses))

    def family_averages(self) -> dict[str, float]:
        """Mean difference vs the reference, over all models (``all``) and per family."""
        groups: dict[str, list[float]] = {}
        for model, diff in self.differences.items():
            groups.setdefault("all", []).append(diff)
            groups.setdefault(self.families.get(model, "other"), []).append(diff)
        return {name: round(sum(values) / len(values), 2) for name, values in groups.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "sweep_file": self.sweep_file,
            "generated_at": self.generated_at,
            "reference": self.reference,
            "configurations": {v.name: dict(zip([r[0] for r in configuration_rows([v])],
                                                [r[1][0] for r in configuration_rows([v])], strict=True))
                               for v in self.variants},
            "results": [
                {
                    "model": model,
                    "family": self.families.get(model),
                    "final_miou": {v.name: final_miou(self.status(model, v.name)) for v in self.variants},
                    "difference_vs_reference": self.differences.get(model),
                }
                for model in self.models
            ],
            "family_averages": self.family_averages(),
            "runs": [s.to_json() for s in self.statuses],
            "times": [t.__dict__ for t in self.times],
        }


def final_miou(status: RunStatus | None) -> float | None:
    """The last validation mIoU of a completed run; ``None`` until the run has completed."""
    if status is None or status.state is not RunState.COMPLETED or status.last_val is None:
        return None
    return status.last_val.miou


def build_report(sweep: Sweep, statuses: Sequence[RunStatus], *, reference: str | None = None,
                 run_seconds: Callable[[RunStatus], float | None] | None = None) -> Report:
    """Everything the report says, computed once from the statuses.

    ``run_seconds`` gives a run's training time (default: :func:`training_seconds` on its logs).
    """
    reference = reference or sweep.variants[0].name
    if reference not in {v.name for v in sweep.variants}:
        raise SpecError(sweep.path, "--reference", f"variant {reference!r} is not in this sweep "
                        f"(variants: {', '.join(v.name for v in sweep.variants)})")
    import time

    report = Report(
        sweep=sweep.name, reference=reference, variants=list(sweep.variants), statuses=list(statuses),
        families={model: _family(sweep, model) for model in dict.fromkeys(s.run.model for s in statuses)},
        sweep_file=str(sweep.path), generated_at=time.time(),
    )
    for model in report.models:
        ref = final_miou(report.status(model, reference))
        others = [m for v in sweep.variants if v.name != reference
                  if (m := final_miou(report.status(model, v.name))) is not None]
        if ref is not None and others:
            report.differences[model] = round(max(others) - ref, 2)

    seconds_of = run_seconds or (lambda status: training_seconds(status.run.run_dir))
    ref_seconds = {s.run.model: seconds_of(s) for s in statuses
                   if s.run.variant == reference and final_miou(s) is not None}
    for status in statuses:
        miou = final_miou(status)
        seconds = seconds_of(status) if miou is not None else None
        if miou is None or seconds is None or miou <= 0:
            continue
        ref = ref_seconds.get(status.run.model)
        report.times.append(RunTime(
            model=status.run.model, variant=status.run.variant, seconds=round(seconds, 1), miou=miou,
            minutes_per_point=seconds / 60 / miou,
            speedup_vs_reference=None if status.run.variant == reference or not ref else ref / seconds,
            gpu_hours=None if status.gpu_hours is None else round(status.gpu_hours, 4),
        ))
    return report


def training_seconds(run_dir: Path) -> float | None:
    """Time spent training, from mmengine's per-iteration ``time`` in every start's scalars.

    Queue waits and the gaps between requeues are not in it; iterations repeated after a
    resume count once (the later start's records win, as for the curve). Validation time
    is not included either: mmengine logs it apart.
    """
    per_iter: dict[int, float] = {}
    starts = sorted(p for p in _dirs(run_dir) if re.fullmatch(r"\d{8}_\d{6}", p.name))
    for start in starts:
        scalars = start / "vis_data" / "scalars.json"
        try:
            lines = scalars.read_bytes().splitlines()
        except OSError:
            continue
        records: list[tuple[int, float]] = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written, or garbage: the parser warns about it
            if isinstance(record, dict) and "loss" in record and "time" in record:
                it = record.get("iter", record.get("step"))
                if isinstance(it, int) and isinstance(record["time"], int | float) and math.isfinite(record["time"]):
                    records.append((it, float(record["time"])))
        if records:
            resumed_at = min(it for it, _ in records)
            for it in [i for i in per_iter if i >= resumed_at]:
                del per_iter[it]
            per_iter.update(records)
    if not per_iter:
        return None
    # A record's `time` is the mean seconds per iteration since the previous record.
    total, previous = 0.0, 0
    for it in sorted(per_iter):
        total += per_iter[it] * (it - previous)
        previous = it
    return total


def _dirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []


def _family(sweep: Sweep, model: str) -> str:
    try:
        found = _FAMILY.search(sweep.model_template(model).read_text())
    except OSError:
        return "other"
    return found.group(1) if found else "other"



@dataclass
class ReportFiles:
    """What ``report`` made: its text, the plots it wrote, warnings to show."""

    text: str  # the report, Markdown or JSON
    plots: list[Path]
    warnings: list[str]


def make_report(sweep: Sweep, runs: Sequence[Run], *, reference: str | None = None, fmt: str = "md",
                plots_dir: Path | None = None, out: Path | None = None) -> ReportFiles:
    """Build the report of ``runs``; write its plots into ``plots_dir`` and the report to ``out`` if given."""
    import os

    from prove_jobs.fsafe import atomic_write_text
    from prove_jobs.report.markdown import render_markdown
    from prove_jobs.report.plots import write_plots
    from prove_jobs.status import collect_status

    status = collect_status(runs, accounting=True)
    warnings = [status.scheduler_note] if status.scheduler_note else []
    report = build_report(sweep, status.statuses, reference=reference)
    links: dict[str, str] = {}
    written: list[Path] = []
    if plots_dir is not None and not any(s.curve for s in report.statuses):
        warnings.append(f"no run has a validation yet: no plot written (and {plots_dir} not made)")
    elif plots_dir is not None:
        base = out.parent if out is not None else Path.cwd()
        for variant, path in write_plots(report, plots_dir).items():
            links[variant] = os.path.relpath(path.absolute(), base.absolute())
            written.append(path)
    if fmt == "json":
        text = json.dumps({**report.to_json(), "plots": links}, indent=2) + "\n"
    else:
        text = render_markdown(report, plots=links)
    if out is not None:
        atomic_write_text(out, text)
    return ReportFiles(text, written, warnings)
