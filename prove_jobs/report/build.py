"""The report as data: :class:`Report` (also the ``--format json`` output) computed once from the runs' statuses
by :func:`build_report`: the comparison of each model's variants (means over seeds, ``stats``), training times."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.plan import configuration_rows, variant_label
from prove_jobs.report.stats import METHOD, SeedStats, difference_ci95, summarize, verdict
from prove_jobs.spec import Sweep, Variant
from prove_jobs.states import RunState
from prove_jobs.status import RunStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.report.resources import RunResources

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
    seed: int | None = None  # one of several seeds of its variant
    wall_seconds: float | None = None  # status's Elapsed: the counted starts' wall time (docs/status.md, "Time")
    to_95_seconds: float | None = None  # training time until a validation first reached 95 % of the final mIoU


@dataclass(frozen=True)
class Comparison:
    """A model's best non-reference variant against the reference: difference of means, its interval, a verdict."""

    variant: str
    difference: float
    ci95: tuple[float, float] | None  # None: a side has a single run
    verdict: str


@dataclass(frozen=True)
class Scope:
    """What a report compares: a sweep's variants, or the variants found under a folder (``report --root``)."""

    name: str
    source: str  # the sweep file, or the folder
    variants: tuple[Variant, ...]
    families: Mapping[str, str]  # model -> family tag of its template ("cnn", "transformer", ...)
    config_rows: tuple[tuple[str, tuple[str, ...]], ...] = ()  # the configurations table; () = the variants'
    config_notes: tuple[str, ...] = ()  # where what was trained differs from the templates, or between runs
    # per model: where its weights start and a model-zoo variant's recipe for it (header, rows)
    model_table: tuple[tuple[str, ...], tuple[tuple[str, ...], ...]] = ((), ())
    # variant -> its recipe in a header ("80k, BS=16", "12 epochs, BS=?") where the variant's own numbers are not
    # what to show (found under --root: they are what its runs recorded, ? where none did)
    labels: Mapping[str, str] = field(default_factory=dict)


TrainingTimeOf = Callable[[RunStatus], "tuple[float | None, Sequence[tuple[int, float]]]"]


@dataclass
class Report:
    """Everything the comparison report says, computed once from the runs' statuses."""

    sweep: str
    reference: str
    variants: list[Variant]
    statuses: list[RunStatus]
    families: dict[str, str]
    sweep_file: str = ""
    generated_at: float = 0.0
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    times: list[RunTime] = field(default_factory=list)
    config_rows: list[tuple[str, list[str]]] = field(default_factory=list)
    config_notes: list[str] = field(default_factory=list)
    model_table: tuple[tuple[str, ...], tuple[tuple[str, ...], ...]] = ((), ())
    labels: dict[str, str] = field(default_factory=dict)  # Scope.labels
    resources: list[RunResources] = field(default_factory=list)  # what each run used (report.resources)
    _runs: dict[tuple[str, str], list[RunStatus]] = field(default_factory=dict, init=False, repr=False)
    _variants_of: dict[str, dict[str, None]] = field(default_factory=dict, init=False, repr=False)  # model -> ran
    _finals: dict[tuple[str, str], SeedStats | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for status in self.statuses:  # asked for per cell: a thousand runs make it worth an index
            self._runs.setdefault((status.run.model, status.run.variant), []).append(status)
            self._variants_of.setdefault(status.run.model, {})[status.run.variant] = None

    def label(self, variant: Variant) -> str:
        """``WEIGHTS_CITYSCAPES (20k, BS=16)``: a variant with its recipe, as a header names it (never ``BS=0``)."""
        recipe = self.labels.get(variant.name)
        return variant_label(variant) if recipe is None else f"{variant.name} ({recipe})"

    def status_heading(self, variant: Variant) -> str:
        """``WEIGHTS_CITYSCAPES (BS=16, 20,000 iters)``: the Status section's heading of a variant."""
        recipe = self.labels.get(variant.name)
        if recipe is not None:
            return f"{variant.name} ({recipe})"
        return f"{variant.name} (BS={variant.batch_size}, {variant.max_iters:,} iters)"

    def runs_of(self, model: str, variant: str) -> list[RunStatus]:
        """Every seed's run of (model, variant), in seed order."""
        return self._runs.get((model, variant), [])

    def final(self, model: str, variant: str) -> SeedStats | None:
        """The final validation mIoU over the completed seeds of (model, variant)."""
        key = (model, variant)
        if key in self._finals:  # the comparison, the results and the tables each ask
            return self._finals[key]
        runs = self.runs_of(model, variant)
        found = self._finals[key] = summarize([m for s in runs if (m := final_miou(s)) is not None]) if runs else None
        return found

    def best(self, model: str, variant: str) -> tuple[SeedStats, tuple[int, ...]] | None:
        """The best validation mIoU over the completed seeds, and the iteration of each seed's best."""
        runs = self.runs_of(model, variant)
        if not runs:  # most (model, variant) pairs of a group's history: a run's model is its folder's name
            return None
        done = [s for s in runs if final_miou(s) is not None and s.best_val is not None]
        stats = summarize([s.best_val.miou for s in done if s.best_val and s.best_val.miou is not None])
        return None if stats is None else (stats, tuple(s.best_val.iter for s in done if s.best_val))

    @property
    def seeded(self) -> bool:
        """Has any (model, variant) several seeds? Then cells are means and differences get intervals."""
        return any(s.run.seed is not None for s in self.statuses)

    @property
    def differences(self) -> dict[str, float]:
        """model -> the best non-reference variant's mean minus the reference's mean, in points."""
        return {model: c.difference for model, c in self.comparisons.items()}

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(s.run.model for s in self.statuses))

    def family_averages(self) -> dict[str, float]:
        """Mean difference vs the reference, over all models (``all``) and per family (finite ones only: a NaN
        never reaches here from the logs, and would turn every average into ``+nan pts``)."""
        groups: dict[str, list[float]] = {}
        for model, diff in self.differences.items():
            if not math.isfinite(diff):
                continue
            groups.setdefault("all", []).append(diff)
            groups.setdefault(self.families.get(model, "other"), []).append(diff)
        return {name: round(sum(values) / len(values), 2) for name, values in groups.items()}

    def to_json(self) -> dict[str, Any]:
        from prove_jobs.report.resources import resources_json

        labels = [label for label, _ in self.config_rows]
        return {
            "sweep": self.sweep,
            "sweep_file": self.sweep_file,
            "generated_at": self.generated_at,
            "reference": self.reference,
            "statistics": METHOD,
            # a value not known is null (its cell ?), never 0: configuration_notes say what was looked for
            "configurations": {v.name: {label: None if cells[i].startswith("?") else cells[i]
                                        for label, cells in self.config_rows}
                               for i, v in enumerate(self.variants)} if labels else {},
            "configuration_notes": self.config_notes,
            "models": [dict(zip(self.model_table[0], row, strict=True)) for row in self.model_table[1]],
            "results": [self._result(model) for model in self.models],
            "family_averages": self.family_averages(),
            "runs": [s.to_json(finite=False) for s in self.statuses],  # make_report writes it finite
            "times": [t.__dict__ for t in self.times],
            **({"resources": resources_json(self)} if self.resources else {}),
        }

    def _result(self, model: str) -> dict[str, Any]:
        ran = self._variants_of.get(model, {})
        final_miou: dict[str, float | None] = dict.fromkeys(v.name for v in self.variants)
        seeds, best = {}, {}  # only a variant the model ran has either (most pairs of a group's history)
        for name in final_miou:
            if name not in ran:
                continue
            if (stats := self.final(model, name)) is not None:
                final_miou[name] = round(stats.mean, 4)
                seeds[name] = stats.to_json()
            if (found := self.best(model, name)) is not None:
                best[name] = {**found[0].to_json(), "iters": list(found[1])}
        comparison = self.comparisons.get(model)
        return {
            "model": model,
            "family": self.families.get(model),
            "final_miou": final_miou,
            "seeds": seeds,
            "best_miou": best,
            "compared_variant": comparison.variant if comparison else None,
            "difference_vs_reference": comparison.difference if comparison else None,
            "difference_ci95": None if comparison is None or comparison.ci95 is None else [
                round(comparison.ci95[0], 4), round(comparison.ci95[1], 4)],
            "verdict": comparison.verdict if comparison else None,
        }


def final_miou(status: RunStatus | None) -> float | None:
    """The last validation mIoU of a completed run; ``None`` until the run has completed."""
    if status is None or status.state is not RunState.COMPLETED or status.last_val is None:
        return None
    return status.last_val.miou


def sweep_scope(sweep: Sweep, models: Sequence[str] = ()) -> Scope:
    """A sweep's variants and its models' families, as its templates give them."""
    return Scope(name=sweep.name, source=str(sweep.path), variants=sweep.variants,
                 families={model: sweep.facts(model).family for model in (models or sweep.models)})


def build_report(scope: Scope | Sweep, statuses: Sequence[RunStatus], *, reference: str | None = None,
                 training_time: TrainingTimeOf | None = None) -> Report:
    """Everything the report says, computed once from the statuses.

    ``training_time`` gives a run's training seconds and the cumulative seconds at each validation
    iteration (default: read from its logs).
    """
    if isinstance(scope, Sweep):
        scope = sweep_scope(scope, list(dict.fromkeys(s.run.model for s in statuses)))
    reference = reference or scope.variants[0].name
    if reference not in {v.name for v in scope.variants}:
        raise SpecError(scope.source, "--reference", f"variant {reference!r} is not in this sweep "
                        f"(variants: {', '.join(v.name for v in scope.variants)})")
    import time

    report = Report(
        sweep=scope.name, reference=reference, variants=list(scope.variants), statuses=list(statuses),
        families=dict(scope.families), sweep_file=scope.source, generated_at=time.time(),
        config_rows=[(label, list(cells)) for label, cells in scope.config_rows]
        or configuration_rows(scope.variants),
        config_notes=list(scope.config_notes),
        model_table=scope.model_table, labels=dict(scope.labels),
    )
    for model in report.models:
        comparison = _compare(report, model)
        if comparison is not None:
            report.comparisons[model] = comparison
    report.times = _times(report, training_time or _logged_training_time)
    return report


def _compare(report: Report, model: str) -> Comparison | None:
    ref = report.final(model, report.reference)
    if ref is None:
        return None
    others = [(v.name, s) for v in report.variants if v.name != report.reference
              if (s := report.final(model, v.name)) is not None]
    if not others:
        return None
    name, best = max(others, key=lambda pair: pair[1].mean)
    difference = round(best.mean - ref.mean, 2)
    ci = difference_ci95(ref.values, best.values)
    return Comparison(name, difference, ci, verdict(difference, ci, ref.n, best.n))


def _times(report: Report, training_time: TrainingTimeOf) -> list[RunTime]:
    timed = {id(s): training_time(s) for s in report.statuses if final_miou(s) is not None}
    ref_seconds: dict[str, list[float]] = {}
    for status in report.statuses:
        seconds = timed.get(id(status), (None, ()))[0]
        if status.run.variant == report.reference and seconds:
            ref_seconds.setdefault(status.run.model, []).append(seconds)
    times = []
    for status in report.statuses:
        miou = final_miou(status)
        seconds, at_iter = timed.get(id(status), (None, ()))
        if miou is None or seconds is None or miou <= 0:
            continue
        refs = ref_seconds.get(status.run.model)
        ref = sum(refs) / len(refs) if refs else None
        times.append(RunTime(
            model=status.run.model, variant=status.run.variant, seconds=round(seconds, 1), miou=miou,
            minutes_per_point=seconds / 60 / miou,
            # no time logged (every record's `time` 0) on either side: n/a, not a division by zero
            speedup_vs_reference=None if status.run.variant == report.reference or not ref or not seconds
            else ref / seconds,
            gpu_hours=None if status.gpu_hours is None else round(status.gpu_hours, 4),
            seed=status.run.seed, wall_seconds=_wall_seconds(status),
            to_95_seconds=_to_95(status, at_iter, miou),
        ))
    return times


def _wall_seconds(status: RunStatus) -> float | None:
    """The run's wall time: what ``status`` shows as Elapsed (docs/status.md, "Time"): one word, one number."""
    return None if status.elapsed_s is None else round(status.elapsed_s, 1)


def _to_95(status: RunStatus, at_iter: Sequence[tuple[int, float]], final: float) -> float | None:
    """Training seconds until a validation first reached 95 % of the final mIoU."""
    reached = next((p.iter for p in status.curve if p.miou is not None and p.miou >= 0.95 * final), None)
    seconds = dict(at_iter)
    return None if reached is None or reached not in seconds else round(seconds[reached], 1)


def _logged_training_time(status: RunStatus) -> tuple[float | None, Sequence[tuple[int, float]]]:
    from prove_jobs.logs import training_time

    time = training_time(status.run.run_dir)
    return time.seconds, time.at_iter


def training_seconds(run_dir: Path) -> float | None:
    """Time spent training, from mmengine's per-iteration ``time`` in every start's logs (JSON or text).

    Queue waits and the gaps between requeues are not in it; iterations repeated after a
    resume count once (the later start's records win, as for the curve). Validation time
    is not included either: mmengine logs it apart.
    """
    from prove_jobs.logs import training_time

    seconds: float | None = training_time(Path(run_dir)).seconds
    return seconds
