"""``prove-jobs report``: read the runs (through the log cache, as ``status``), build the report, write its files.

A sweep's report compares its variants as the templates define them, but its configurations
table says what each variant's runs were trained with (their recorded configs). ``--root``
compares whatever runs are below a folder: variants and models from their paths, recipes from
their recorded configs, the reference the variant with the most iterations at the smallest batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prove_jobs.listing import Listings
from prove_jobs.logs.cache import gc_paused
from prove_jobs.report.build import Report, Scope, build_report, final_miou, sweep_scope
from prove_jobs.report.recipe_cache import RecipeCache, recipes_path
from prove_jobs.report.trained import (
    AS_TRAINED,
    NO_CONFIG,
    TrainedConfig,
    recorded_inits,
    recorded_label,
    recorded_rows,
    trained_rows,
)
from prove_jobs.runs import CONFIG_DIR, MODEL_FILE, Run
from prove_jobs.spec import Sweep, Variant
from prove_jobs.status import RunStatus
from prove_jobs.values import finite_document

_FAMILY = re.compile(r"^prove_family\s*=\s*['\"](\w+)['\"]", re.MULTILINE)


@dataclass
class ReportFiles:
    """What ``report`` made: its text, the plots it wrote, warnings to show."""

    text: str  # the report, Markdown or JSON
    plots: list[Path]
    warnings: list[str]
    statuses: list[RunStatus]  # of the runs it compares (``report --terminal`` draws their curves)


def make_report(sweep: Sweep | None, runs: Sequence[Run], *, reference: str | None = None, fmt: str = "md",
                plots_dir: Path | None = None, out: Path | None = None, root: Path | None = None,
                listings: Listings | None = None) -> ReportFiles:
    """The report of ``runs`` (a sweep's, or with ``sweep=None`` those found under ``root``); its plots go
    into ``plots_dir`` and the report to ``out`` if given. ``listings``: run dirs ``--root`` listed already."""
    from prove_jobs.fsafe import atomic_write_text
    from prove_jobs.report.markdown import render_markdown
    from prove_jobs.status_source import StatusSource, missing_data_root

    data_root = sweep.data_root if sweep is not None else root.absolute() if root is not None else None
    source = StatusSource(runs, scope=data_root, accounting=True, listings=listings)
    source.logs.keep_listings = True  # each run's training time is asked for after its status
    try:
        with gc_paused():  # a status, a config, a time per run: no cycles
            statuses, warnings = source.collect()
            missing = missing_data_root(sweep) if sweep is not None else None
            warnings += [missing] if missing else []
            roots = sorted({str(s.run.data_root) for s in statuses})
            if len(roots) > 1:
                warnings.append(f"pooled runs from {len(roots)} data roots: {', '.join(roots)} (name one with "
                                "--root to compare one group's runs)")
            statuses, left_out = counted_once(statuses)
            warnings += left_out
            # a queued run has its config rendered already: only a run that started has trained with it
            recipes = RecipeCache(recipes_path(source.scope), source.scope)
            trained = {s.run: recipes.read(s.run.run_dir) if _started(s) else None for s in statuses} \
                if sweep is not None else {s.run: _recorded(s, recipes) if _started(s) else None for s in statuses}
            with contextlib.suppress(OSError):  # the cache only saves time: a read-only home must not fail it
                recipes.save()
            warnings += [note for config in trained.values() if config is not None for note in config.rejected]
            scope = (_sweep_scope(sweep, statuses, trained, reference) if sweep is not None
                     else _root_scope(root, statuses, trained, reference, warnings))

            def training_time(status: RunStatus) -> tuple[float | None, Sequence[tuple[int, float]]]:
                time = source.logs.training_time(status.run.run_dir)
                return time.seconds, time.at_iter

            report = build_report(scope, statuses, reference=reference, training_time=training_time)
            from prove_jobs.report.resources import collect_resources

            report.resources = collect_resources(statuses, sweep.resources_for if sweep is not None else _no_request,
                                                 warnings)
    finally:
        note = source.close()
    warnings += [note] if note else []
    links, written = _plots(report, plots_dir, out, warnings)
    # never NaN nor infinity in the JSON (null, and "<key>_note" beside it): a strict parser reads it
    with gc_paused():
        text = _finite_json_text({**report.to_json(), "plots": links}) if fmt == "json" \
            else render_markdown(report, plots=links)
    if out is not None:
        atomic_write_text(out, text)
    return ReportFiles(text, written, warnings, list(statuses))


def _no_request(run: Run) -> None:
    """``report --root``: no sweep says what a run's job asked for (sacct does, with accounting on)."""
    return None


def counted_once(statuses: Sequence[RunStatus]) -> tuple[list[RunStatus], list[str]]:
    """Each (model, variant, seed) once: two runs that trained the same seed (a one-seed run and the ``seed0/``
    a later sweep trained inside it, or the same run under two data roots) would count one result twice. A
    completed run is kept over one that is not, then the first in path order; each one left out is named.
    A run whose seed nothing recorded (started by hand) is kept: nothing says it repeats another."""
    kept: dict[tuple[str, str, int | None], RunStatus] = {}
    notes: list[str] = []
    left_out: set[int] = set()
    for status in sorted((s for s in statuses if s.seed is not None),
                         key=lambda s: (final_miou(s) is None, str(s.run.run_dir))):
        key = (status.run.model, status.run.variant, status.seed)
        first = kept.setdefault(key, status)
        if first is not status:
            left_out.add(id(status))
            notes.append(f"{status.run.run_dir}: left out, it trained seed {status.seed} of {status.run.variant}/"
                         f"{status.run.model} as {first.run.run_dir} did (the report counts each seed once)")
    return [s for s in statuses if id(s) not in left_out], notes


def _finite_json_text(document: dict[str, Any]) -> str:
    """``json_text`` of ``document`` with no NaN nor infinity in it: written by the C encoder, which refuses them;
    only a document that has one is walked (``finite_document``: a second and a half for 10,000 runs)."""
    try:
        return json_text(document, allow_nan=False)
    except ValueError:
        return json_text(finite_document(document))


def json_text(document: dict[str, object], *, allow_nan: bool = True) -> str:
    """One key a line, and a list's items one a line (as ``status --json``): json's C encoder writes each
    line, where ``indent`` takes the pure-Python one (a second for a thousand runs)."""
    encode = _encoder(allow_nan)
    lines = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            items = ",\n    ".join(map(encode, value))
            lines.append(f"  {json.dumps(key)}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {encode(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _encoder(allow_nan: bool) -> Callable[[object], str]:
    """``json.dumps`` with its defaults (and ``allow_nan``), made once for the tens of thousands of items of a
    report: ``dumps`` makes an encoder a call where an argument is not its default, and ``JSONEncoder.encode``
    a C one a call. Python's own ``encode`` where its C encoder is missing."""
    from json import encoder

    default = encoder.JSONEncoder(allow_nan=allow_nan)
    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return default.encode
    # as JSONEncoder.iterencode(_one_shot=True) makes it: no indent, ", " and ": ", ASCII, circular check
    one = make({}, default.default, encoder.encode_basestring_ascii, None, ": ", ", ", False, False, allow_nan)
    return lambda value: "".join(one(value, 0))


def _recorded(status: RunStatus, recipes: RecipeCache) -> TrainedConfig:
    """A run found under --root: its recipe as its config says, its iterations (when its config does not give
    them) as its logs do, and for each value neither gives what was looked for (``TrainedConfig.missing``)."""
    why: list[str] = []
    config = recipes.read(status.run.run_dir, why)
    if config is None:
        config = TrainedConfig(missing=tuple((NO_CONFIG, f"recipe: {note}") for note in why or ["no config read"]))
    if config.max_iters is None and not config.by_epoch and status.max_iters is not None:
        config = replace(config, max_iters=status.max_iters,
                         missing=tuple(m for m in config.missing if m[0] != "max_iters"))
    return config


def _started(status: RunStatus) -> bool:
    return bool((status.log is not None and status.log.starts) or (status.meta and status.meta.started_at))


def _sweep_scope(sweep: Sweep, statuses: Sequence[RunStatus], trained: dict[Run, TrainedConfig | None],
                 reference: str | None) -> Scope:
    from prove_jobs.plan import model_rows, sweep_rows

    scope = sweep_scope(sweep, list(dict.fromkeys(s.run.model for s in statuses)))
    by_variant = _by_variant(statuses, trained)
    rows, notes = trained_rows(scope.variants, by_variant, reference)
    runs = [s.run for s in statuses]
    rows += recorded_rows(scope.variants, by_variant, sweep_rows(sweep, scope.variants, runs))
    header, models = model_rows(sweep, runs)
    inits = recorded_inits([pair for pairs in by_variant.values() for pair in pairs])
    models = [[row[0], inits.get(row[0], row[1]), *row[2:]] for row in models]  # what the runs started from
    return replace(scope, config_rows=tuple((label, tuple(cells)) for label, cells in rows), config_notes=tuple(notes),
                   model_table=(tuple(header), tuple(tuple(row) for row in models)))


def _root_scope(root: Path | None, statuses: Sequence[RunStatus], trained: dict[Run, TrainedConfig | None],
                reference: str | None, warnings: list[str]) -> Scope:
    """Variants named by the runs' paths, each with the recipe its runs recorded; the reference first."""
    names = list(dict.fromkeys(s.run.variant for s in statuses))
    members: dict[str, list[TrainedConfig]] = {name: [] for name in names}
    for status in statuses:
        if (config := trained.get(status.run)) is not None:
            members[status.run.variant].append(config)
    variants = [_recorded_variant(name, members[name]) for name in names]
    variants.sort(key=lambda v: (v.batch_size or 1 << 30, -v.max_iters))  # most iterations at the smallest batch
    # prove's model.py names the family; a run whose recipe came from an mmengine dump has none to read
    families = {s.run.model: _family(s.run.run_dir / CONFIG_DIR / MODEL_FILE, s.run.run_dir, warnings)
                if (c := trained.get(s.run)) is None or c.source is None or c.source.parent.name == CONFIG_DIR
                else "other" for s in statuses}
    by_variant = _by_variant(statuses, trained)
    rows, notes = trained_rows(variants, by_variant, reference or (variants[0].name if variants else None))
    rows += recorded_rows(variants, by_variant)
    inits = recorded_inits([pair for pairs in by_variant.values() for pair in pairs])
    models = tuple((model, inits.get(model, "?")) for model in dict.fromkeys(s.run.model for s in statuses))
    return Scope(name=f"runs under {root}", source=str(root), variants=tuple(variants), families=families,
                 config_rows=tuple((label, tuple(cells)) for label, cells in rows), config_notes=tuple(notes),
                 model_table=(("Model", "Initialisation"), models),
                 labels={name: recorded_label(configs) for name, configs in members.items()})


def _recorded_variant(name: str, configs: Sequence[TrainedConfig]) -> Variant:
    """A variant as its runs trained it: each field from the first run that recorded it (a first run without
    an LR takes the LR of the next that has one). A ``Variant`` holds numbers: where no run recorded one it
    holds 0, which nothing shows (its cells are ``?``, its headers ``Scope.labels``); the plots and the choice
    of the reference read 0 as not known. A per-GPU batch is no total batch: 0 too."""

    def first(field: str) -> Any:
        return next((value for c in configs if (value := getattr(c, field)) is not None), None)

    per_gpu = next((c.batch_is_per_gpu for c in configs if c.batch_size is not None), False)
    return Variant(
        name=name, max_iters=first("max_iters") or 0, batch_size=0 if per_gpu else first("batch_size") or 0,
        lr=first("lr") or 0.0, warmup_iters=first("warmup") or 0, val_interval=first("val_interval") or 0,
        checkpoint_interval=first("checkpoint_interval") or 0, crop_size=first("crop_size") or (0, 0),
        lr_rule=AS_TRAINED,
    )


def _by_variant(statuses: Sequence[RunStatus],
                trained: dict[Run, TrainedConfig | None]) -> dict[str, list[tuple[str, TrainedConfig | None]]]:
    grouped: dict[str, list[tuple[str, TrainedConfig | None]]] = {}
    for status in statuses:
        label = status.run.model + ("" if status.run.seed is None else f"/seed{status.run.seed}")
        grouped.setdefault(status.run.variant, []).append((label, trained.get(status.run)))
    return grouped


def _plots(report: Report, plots_dir: Path | None, out: Path | None,
           warnings: list[str]) -> tuple[dict[str, str], list[Path]]:
    """Write the plots; returns their links relative to the report (``variant`` or ``model:<name>``) and paths."""
    if plots_dir is None:
        return {}, []
    if not any(s.curve for s in report.statuses):
        warnings.append(f"no run has a validation yet: no plot written (and {plots_dir} not made)")
        return {}, []
    from prove_jobs.report.plots import write_model_plots, write_plots

    base = out.parent if out is not None else Path.cwd()
    paths = {**write_plots(report, plots_dir),
             **{f"model:{model}": path for model, path in write_model_plots(report, plots_dir).items()}}
    links = {key: os.path.relpath(path.absolute(), base.absolute()) for key, path in paths.items()}
    return links, list(paths.values())


def _family(template: Path, below: Path, warnings: list[str]) -> str:
    """``prove_family`` of a run's recorded ``model.py`` (``below``: its run dir), "other" when it says none.

    Read as any file of the shared root (:mod:`prove_jobs.safe_read`): a FIFO, a link (to ``/dev/zero``)
    or a file over 1 MB there is a warning, never a wait or a read without end.
    """
    from prove_jobs.safe_read import NotReadable, read_capped

    try:
        found = _FAMILY.search(read_capped(template, below=below).decode("utf-8", errors="replace"))
    except NotReadable as exc:
        warnings.append(str(exc))
        return "other"
    except OSError:
        return "other"
    return found.group(1) if found else "other"
