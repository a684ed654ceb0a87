"""What each run trained with, read back from the config it was started from.

The report's "Training Configurations" table came from today's templates (``plan.configuration_rows``):
change a variant's LR after its runs finished and the report showed the new LR. Here each cell comes
from the runs' own configs: ``<run_dir>/prove/config.py`` (what prove-jobs rendered, what the payload
loads) or, for a run started by hand, the config mmengine's Runner dumped into its work dir.

The file is parsed (``config_ast``), never imported or executed: it lies in a group-writable data
root, and the report runs on login nodes that may lack mmengine. What the parser does not follow is
unknown, and a field that depends on it is left out (the template's value stands in), never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from operator import attrgetter
from pathlib import Path

from prove_jobs.plan import configuration_rows
from prove_jobs.report.config_ast import Checker, module_values
from prove_jobs.report.recipe import FIELD_NAMES, TrainedConfig, init_of, trained

__all__ = ["AS_TRAINED", "TrainedConfig", "read_trained_config", "recorded_label", "trained_rows"]
from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE, MODEL_FILE, START_DIR
from prove_jobs.safe_read import MAX_CONFIG_BYTES
from prove_jobs.spec import Variant

AS_TRAINED = "as trained"  # the LR rule of a variant found under --root: its recipe is what its runs recorded
LOG_HEAD_BYTES = 1 << 16  # mmengine logs its runtime environment in a log's first few KB


# --- reading the files, never through a link -------------------------------------------------------------


def read_trained_config(run_dir: Path, *, why: list[str] | None = None) -> TrainedConfig | None:
    """See :func:`read_recipe` (its recipe alone)."""
    return read_recipe(run_dir, why)[0]


def read_recipe(run_dir: Path, why: list[str] | None = None) -> tuple[TrainedConfig | None, bool]:
    """The recipe ``run_dir`` trained with, or ``None`` when it has no config this can read (and then,
    into ``why``, what was looked for: the report's note beside its ``?``).

    ``prove/config.py`` when it is a plain file; else mmengine's (or mmcv's) dump at the top of the work
    dir: the only ``*.py`` there, or, among several, the one named like the work dir (mmseg's
    ``work_dirs/<config>/<config>.py``); several and none so named is ambiguous (which start trained
    what?): ``None``. A symbolic link is never followed (anyone in the group can plant one), nor a
    file over 1 MB read. A config with ``_base_`` that defines a field only in its base leaves it out.

    The flag: the answer is final while the run dir and the file read do not change (``RecipeCache`` keeps it);
    not when a per-GPU batch found no ``GPU number`` in a log whose head is still being written.
    """
    notes = why if why is not None else []
    final = [True]

    def gpus() -> int | None:
        number, final[0] = _gpu_number(run_fd)
        return number

    try:
        run_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        notes.append(f"its work dir cannot be read ({exc.strerror or exc})")
        return None, False
    try:
        found = _config_file(run_fd, run_dir, notes)
        if found is None:
            return None, True
        values = module_values(found[1])
        if values is None:
            notes.append(f"{found[0].name} is no Python this can read")
            return None, True
        config = trained(values, found[0], gpus)
        model = _read(run_fd, f"{CONFIG_DIR}/{MODEL_FILE}", MAX_CONFIG_BYTES) if found[0].parent.name == CONFIG_DIR \
            else None
        model_values = module_values(model) if model is not None else None
        if model_values is None:
            return config, final[0]
        init = Checker(run_dir / CONFIG_DIR / MODEL_FILE)
        return replace(config, init=init("init", init_of(model_values)),
                       rejected=(*config.rejected, *init.rejected.values())), final[0]
    finally:
        os.close(run_fd)


def _read(dir_fd: int, path: str, limit: int, *, whole: bool = True) -> bytes | None:
    """A regular file's bytes (``path`` below ``dir_fd``, no link on the way); the first ``limit`` when not
    ``whole``. ``None``: not there, a link, not a plain file (a fifo would hang the report), too big."""
    from prove_jobs.safe_read import NotReadable, read_capped, read_head

    try:
        return read_capped(path, limit, below=dir_fd) if whole else read_head(path, limit, below=dir_fd)
    except (NotReadable, OSError):
        return None


def _config_file(run_fd: int, run_dir: Path, why: list[str]) -> tuple[Path, bytes] | None:
    data = _read(run_fd, f"{CONFIG_DIR}/{CONFIG_FILE}", MAX_CONFIG_BYTES)
    if data is not None:
        return run_dir / CONFIG_DIR / CONFIG_FILE, data
    dumps = [name for name, is_file in _listing(run_fd) if is_file and name.endswith(".py")]
    if len(dumps) > 1:
        named = [name for name in dumps if name == f"{run_dir.name}.py"]
        if not named:
            why.append(f"{len(dumps)} config files in its work dir ({', '.join(dumps[:3])}"
                       f"{', ...' if len(dumps) > 3 else ''}) and none named after it: which one trained?")
        dumps = named
    elif not dumps:
        why.append(f"no config file in its work dir (no {CONFIG_DIR}/{CONFIG_FILE}, no <config>.py)")
    data = _read(run_fd, dumps[0], MAX_CONFIG_BYTES) if len(dumps) == 1 else None
    if data is None and len(dumps) == 1:
        why.append(f"{dumps[0]} is not a plain file of at most {MAX_CONFIG_BYTES:,} bytes")
    return None if data is None else (run_dir / dumps[0], data)


def _listing(dir_fd: int) -> list[tuple[str, bool]]:
    """(name, is a plain file) of what ``dir_fd`` holds that is not hidden and not a link, sorted."""
    try:
        with os.scandir(dir_fd) as entries:
            return sorted((e.name, e.is_file(follow_symlinks=False)) for e in entries
                          if not e.name.startswith(".") and not e.is_symlink())
    except OSError:
        return []


def _gpu_number(run_fd: int) -> tuple[int | None, bool]:
    """``GPU number: N`` from the newest start's ``<ts>/<ts>.log``: the world size mmengine ran with; and whether
    that is final (not while the log is shorter than the head read: its header may be still to come; mmengine
    writes the log as a start begins, so a start without one has none to come)."""
    starts = [name for name, is_file in _listing(run_fd) if not is_file and START_DIR.match(name)]
    head = _read(run_fd, f"{starts[-1]}/{starts[-1]}.log", LOG_HEAD_BYTES, whole=False) if starts else None
    for line in (head or b"").splitlines():
        key, _, number = line.strip().partition(b": ")
        if key == b"GPU number" and number.isdigit() and len(number) <= 9:  # int() of 4,300 digits raises
            return int(number) or None, True
    return None, head is None or len(head) >= LOG_HEAD_BYTES


# --- the report's table -------------------------------------------------------------------------------

# Each row of plan.configuration_rows, and the fields its cell shows (the derived rows: several).
_ROW_FIELDS = {
    "Iterations": ("max_iters",), "Batch size": ("batch_size",), "Total samples": ("max_iters", "batch_size"),
    "Gradient steps": ("max_iters",), "Crop size": ("crop_size",), "Optimizer": ("optimizer",),
    "Base LR": ("lr",), "Warmup": ("warmup",), "LR scheduler": ("scheduler",),
    "Val interval": ("val_interval",), "Checkpoint interval": ("checkpoint_interval",),
}
_NOTE_NAMES = FIELD_NAMES
UNKNOWN_CELL = "?"  # what the table shows, and JSON's null, for a value no run's files gave
NO_CONFIG = "recipe"  # TrainedConfig.missing's field for a run whose config could not be read at all


def trained_rows(variants: Sequence[Variant], runs_by_variant: Mapping[str, Sequence[tuple[str, TrainedConfig | None]]],
                 reference: str | None = None) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """``configuration_rows(variants)``, each cell from what the variant's runs trained with, and notes.

    ``runs_by_variant``: variant name -> (run label, its ``read_trained_config``). Runs that agree give
    their value; runs that disagree give every value, joined by " / ", and a note naming the runs;
    where no run recorded a field, the cell is the template's, or for a variant found under --root (no
    template), ``?`` with a note naming what was looked for in which run's file. A note also says where
    what was trained differs from what the template gives today. An LR's factor is against what ``reference`` (default:
    the first variant) trained with, as the reference report's "0.08 (8× scaled)". A model-zoo
    variant's numbers differ by model: its cells say so (the Models table has them).
    """
    reference_lr = _reference_lr(variants, runs_by_variant, reference)
    variants = [replace(v, lr_scale=round(v.lr / reference_lr, 6) if reference_lr and v.lr else 1.0)
                for v in variants]
    template = configuration_rows(variants)
    columns: list[dict[str, str]] = []
    notes: list[str] = []
    for index, variant in enumerate(variants):
        runs = [(label, c) for label, c in runs_by_variant.get(variant.name, ()) if c is not None]
        if variant.per_model:
            columns.append({label: cells[index] for label, cells in template})
            continue
        per_run = _cells_of_runs(variant, [c for _, c in runs], reference_lr)
        column = {}
        for label, cells in template:
            seen = list(dict.fromkeys(cell for c in per_run if (cell := c[label]) is not None))
            # a variant found under --root has no template: what none of its runs recorded is not known
            column[label] = " / ".join(seen) if seen else UNKNOWN_CELL if variant.lr_rule == AS_TRAINED \
                else cells[index]
        columns.append(column)
        notes += _notes(variant, runs)
        notes += _missing_notes(variant.name, runs) if variant.lr_rule == AS_TRAINED else []
    return [(label, [column[label] for column in columns]) for label, _ in template], notes


RunsByVariant = Mapping[str, Sequence[tuple[str, "TrainedConfig | None"]]]


def _reference_lr(variants: Sequence[Variant], runs_by_variant: RunsByVariant, reference: str | None) -> float | None:
    """The LR the reference variant trained with (its runs', when they agree), else its template's."""
    ref = next((v for v in variants if v.name == reference), variants[0] if variants else None)
    if ref is None or ref.per_model:
        return None
    trained = {c.lr for _, c in runs_by_variant.get(ref.name, ()) if c is not None and c.lr is not None}
    return trained.pop() if len(trained) == 1 else (ref.lr or None)


# What a run's cells are made of (_run_cells reads no other field): runs that trained the same recipe share them
_CELL_FIELDS = attrgetter("max_iters", "batch_size", "batch_is_per_gpu", "crop_size", "optimizer", "lr", "warmup",
                          "scheduler", "val_interval", "checkpoint_interval", "max_epochs", "by_epoch",
                          "checkpoint_by_epoch")


def _cells_of_runs(variant: Variant, configs: Sequence[TrainedConfig],
                   reference_lr: float | None) -> list[dict[str, str | None]]:
    """``_run_cells`` of each config, made once per recipe (a group's thousands of runs train a few)."""
    made: dict[object, dict[str, str | None]] = {}
    cells = []
    for config in configs:
        key = _CELL_FIELDS(config)
        found = made.get(key)
        if found is None:
            found = made[key] = _run_cells(variant, config, reference_lr)
        cells.append(found)
    return cells


def _run_cells(variant: Variant, config: TrainedConfig, reference_lr: float | None) -> dict[str, str | None]:
    """One run's cell of each row (plan's formats, on the variant with what was trained put in); ``None``
    where its config recorded none of what the row shows (for a variant found under --root, whose
    fields are only other runs' values: where it recorded not all of it). An epoch-based run's schedule
    and intervals are in epochs, and its totals (which need the iterations of an epoch) unknown."""
    changes: dict[str, object] = {"max_iters": config.max_iters, "batch_size": config.batch_size,
                                  "crop_size": config.crop_size, "lr": config.lr, "warmup_iters": config.warmup,
                                  "val_interval": config.val_interval,
                                  "checkpoint_interval": config.checkpoint_interval}
    if config.lr is not None and reference_lr:  # the factor is against what the reference trained with
        changes["lr_scale"] = round(config.lr / reference_lr, 6)
    trained = replace(variant, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
    cells: dict[str, str | None] = {label: row[0] for label, row in configuration_rows([trained])}
    cells["Optimizer"] = config.optimizer or cells["Optimizer"]
    cells["LR scheduler"] = config.scheduler or cells["LR scheduler"]
    if config.batch_is_per_gpu:  # the GPU count is unknown: neither a total batch nor a total of samples
        cells["Batch size"] = f"{cells['Batch size']} per GPU"
        cells["Total samples"] = "? (GPU count unknown)"
    if config.by_epoch:
        cells["Iterations"] = None if config.max_epochs is None else _count(config.max_epochs, "epoch")
        cells["Total samples"] = cells["Gradient steps"] = None
        cells["Val interval"] = None if config.val_interval is None else f"every {_count(config.val_interval, 'epoch')}"
    if config.checkpoint_interval is not None and (config.by_epoch or config.checkpoint_by_epoch):
        # the hook's unit, named wherever it is not the plain iterations of an iteration loop
        unit = "epoch" if config.checkpoint_by_epoch else "iteration"
        cells["Checkpoint interval"] = f"every {_count(config.checkpoint_interval, unit)}"
    known = all if variant.lr_rule == AS_TRAINED else any
    return {label: cell if known(getattr(config, f) is not None for f in _row_fields(label, config)) else None
            for label, cell in cells.items()}


def _row_fields(label: str, config: TrainedConfig) -> tuple[str, ...]:
    return ("max_epochs",) if label == "Iterations" and config.by_epoch else _ROW_FIELDS[label]


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}{'' if n == 1 else 's'}"


def _missing_notes(variant: str, runs: Sequence[tuple[str, TrainedConfig]]) -> list[str]:
    """Per variant found under --root: what was looked for and not found, in which runs (a few named)."""
    groups: dict[str, list[str]] = {}
    for label, config in runs:
        for _, why in config.missing:
            groups.setdefault(why, []).append(label)
    return [f"{variant} ({_few(labels)}): {why}" for why, labels in groups.items()]


def _few(labels: Sequence[str]) -> str:
    return _listed(labels) if len(labels) <= 3 else f"{', '.join(labels[:3])} and {len(labels) - 3:,} more"


def recorded_label(configs: Sequence[TrainedConfig]) -> str:
    """``80k, BS=16`` for a variant found under --root, from what its runs recorded (the first run that says);
    ``? iterations``, ``BS=?`` for what none did, ``12 epochs`` for an epoch-based loop."""
    iters = next((c.max_iters for c in configs if c.max_iters is not None), None)
    epochs = next((c.max_epochs for c in configs if c.max_epochs is not None), None)
    batch = next((c for c in configs if c.batch_size is not None), None)
    schedule = (f"{iters // 1000}k" if iters % 1000 == 0 else f"{iters:,}") if iters is not None else \
        _count(epochs, "epoch") if epochs is not None else f"{UNKNOWN_CELL} iterations"
    size = UNKNOWN_CELL if batch is None else f"{batch.batch_size}{' per GPU' if batch.batch_is_per_gpu else ''}"
    return f"{schedule}, BS={size}"


_TEXT_FIELDS = attrgetter(*_NOTE_NAMES, "batch_is_per_gpu")  # what _texts reads


def _texts(config: TrainedConfig) -> dict[str, str | None]:
    """Each field as a note writes it (``lr 0.08``, ``crop size 512×512``, ``batch size 2 per GPU``)."""
    texts = {field: _text(getattr(config, field)) for field in _NOTE_NAMES}
    if config.batch_is_per_gpu and texts["batch_size"]:
        texts["batch_size"] = f"{texts['batch_size']} per GPU"
    return texts


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return f"{value[0]}×{value[1]}"
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _notes(variant: Variant, runs: Sequence[tuple[str, TrainedConfig]]) -> list[str]:
    today = TrainedConfig(max_iters=variant.max_iters, batch_size=variant.batch_size, crop_size=variant.crop_size,
                          optimizer=variant.optimizer, lr=variant.lr, warmup=variant.warmup_iters,
                          scheduler=variant.scheduler, val_interval=variant.val_interval,
                          checkpoint_interval=variant.checkpoint_interval)
    now = _texts(today)
    notes = []
    made: dict[object, dict[str, str | None]] = {}  # once a recipe, not once a run nor once a field
    texts = [(label, config, made[key] if (key := _TEXT_FIELDS(config)) in made
              else made.setdefault(key, _texts(config))) for label, config in runs]
    for field, name in _NOTE_NAMES.items():
        groups: dict[str, list[str]] = {}
        for label, _, text_of in texts:
            text = text_of[field]
            if text is not None:
                groups.setdefault(text, []).append(label)
        # by value, not by text: "16 per GPU" where the template gives 16 is no difference worth a note; a
        # variant found under --root has no template (its numbers are its runs')
        same = variant.lr_rule == AS_TRAINED or any(getattr(config, field) == getattr(today, field)
                                                    for _, config in runs)
        template = "" if same or now[field] in groups else f"; the template now gives {now[field]}"
        if len(groups) == 1 and template:
            notes.append(f"{variant.name}: trained with {name} {next(iter(groups))}{template}")
        elif len(groups) > 1:
            parts = [f"{_few(labels)} {'trained ' if not i else ''}with {name} {text}"
                     for i, (text, labels) in enumerate(groups.items())]
            notes.append(f"{variant.name}: {', '.join(parts)}{template}")
    return notes


def _listed(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


# The rows the sweep decides for all models: (row, the field each run recorded, its text).
_SWEEP_ROWS: tuple[tuple[str, str, Callable[[object], str]], ...] = (
    ("Evaluation", "evaluation", str),
    ("Normalisation", "sync_bn", lambda on: "SyncBN" if on else "BN"),
    ("Initialisation", "init", lambda init: "from scratch" if init == "from scratch" else "pretrained (see Models)"),
)


def recorded_rows(variants: Sequence[Variant], runs_by_variant: RunsByVariant,
                  template: Sequence[tuple[str, Sequence[str]]] = ()) -> list[tuple[str, list[str]]]:
    """Evaluation protocol, normalisation and initialisation per variant, as its runs recorded them; where no run
    did, the ``template``'s cell (what the sweep gives today), else ``?``."""
    given = dict(template)
    rows = []
    for label, field, text in _SWEEP_ROWS:
        cells = []
        for index, variant in enumerate(variants):
            seen = list(dict.fromkeys(text(value) for _, c in runs_by_variant.get(variant.name, ())
                                      if c is not None and (value := getattr(c, field)) is not None))
            fallback = given[label][index] if label in given else "?"
            # the sweep's cell names the GPUs SyncBN spans ("SyncBN (4 GPUs)"): keep it where the runs agree
            cells.append(fallback if seen and fallback.startswith(seen[0]) else " / ".join(seen) or fallback)
        rows.append((label, cells))
    return rows


def recorded_inits(runs: Sequence[tuple[str, TrainedConfig | None]]) -> dict[str, str]:
    """model -> the checkpoint its runs started from (file name, or "from scratch"), as they recorded it."""
    inits: dict[str, str] = {}
    for label, config in runs:
        if config is not None and config.init is not None:
            inits.setdefault(label.split("/")[0], config.init)
    return inits
