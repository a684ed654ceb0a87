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
from dataclasses import dataclass, replace
from pathlib import Path

from prove_jobs.plan import configuration_rows
from prove_jobs.report.config_ast import UNKNOWN, Checker, module_values
from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE, MODEL_FILE, START_DIR
from prove_jobs.safe_read import MAX_CONFIG_BYTES
from prove_jobs.spec import Variant

TYPE_CHECKING = False  # not typing's: a report imports little
if TYPE_CHECKING:
    from typing import Any

AS_TRAINED = "as trained"  # the LR rule of a variant found under --root: its recipe is what its runs recorded
LOG_HEAD_BYTES = 1 << 16  # mmengine logs its runtime environment in a log's first few KB


@dataclass(frozen=True)
class TrainedConfig:
    """A run's recipe as its config file says it trained; ``None``: the file does not tell (or not plainly).

    ``batch_size`` is the total batch of one optimiser step when it is known: prove's
    ``total_batch_size``, or a hand run's per-process ``train_dataloader.batch_size`` times the
    ``GPU number`` its newest log reports. Failing both it is the per-process batch, and
    ``batch_is_per_gpu`` says so (a per-GPU 2 on 8 GPUs is not a total batch of 2).
    """

    max_iters: int | None = None
    batch_size: int | None = None
    batch_is_per_gpu: bool = False
    crop_size: tuple[int, int] | None = None
    optimizer: str | None = None
    lr: float | None = None
    warmup: int | None = None  # the end of the LinearLR warm-up; 0: no warm-up
    scheduler: str | None = None  # "Poly" when a PolyLR is among the schedulers, else the last one's type
    val_interval: int | None = None
    checkpoint_interval: int | None = None
    seed: int | None = None
    evaluation: str | None = None  # "whole image", "sliding window 1024×1024, stride 768×768"
    sync_bn: bool | None = None  # mmengine's sync_bn set (BN over all GPUs of a distributed run)
    init: str | None = None  # the checkpoint's file name, or "from scratch"
    source: Path | None = None  # the file it was read from
    rejected: tuple[str, ...] = ()  # "unreadable: FIELD in FILE (why)": values left out, out of type or range



# --- reading the files, never through a link -------------------------------------------------------------


def read_trained_config(run_dir: Path) -> TrainedConfig | None:
    """The recipe ``run_dir`` trained with, or ``None`` when it has no config this can read.

    ``prove/config.py`` when it is a plain file; else mmengine's dump at the top of the work dir: the
    only ``*.py`` there, or, among several, the one named like the work dir (mmseg's
    ``work_dirs/<config>/<config>.py``); several and none so named is ambiguous (which start trained
    what?): ``None``. A symbolic link is never followed (anyone in the group can plant one), nor a
    file over 1 MB read. A config with ``_base_`` that defines a field only in its base leaves it out.
    """
    try:
        run_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = _config_file(run_fd, run_dir)
        if found is None:
            return None
        values = module_values(found[1])
        if values is None:
            return None
        trained = _trained(values, found[0], lambda: _gpu_number(run_fd))
        model = _read(run_fd, f"{CONFIG_DIR}/{MODEL_FILE}", MAX_CONFIG_BYTES) if found[0].parent.name == CONFIG_DIR \
            else None
        model_values = module_values(model) if model is not None else None
        if model_values is None:
            return trained
        init = Checker(run_dir / CONFIG_DIR / MODEL_FILE)
        return replace(trained, init=init("init", _init(model_values)),
                       rejected=(*trained.rejected, *init.rejected.values()))
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


def _config_file(run_fd: int, run_dir: Path) -> tuple[Path, bytes] | None:
    data = _read(run_fd, f"{CONFIG_DIR}/{CONFIG_FILE}", MAX_CONFIG_BYTES)
    if data is not None:
        return run_dir / CONFIG_DIR / CONFIG_FILE, data
    dumps = [name for name, is_file in _listing(run_fd) if is_file and name.endswith(".py")]
    if len(dumps) > 1:
        dumps = [name for name in dumps if name == f"{run_dir.name}.py"]
    data = _read(run_fd, dumps[0], MAX_CONFIG_BYTES) if len(dumps) == 1 else None
    return None if data is None else (run_dir / dumps[0], data)


def _listing(dir_fd: int) -> list[tuple[str, bool]]:
    """(name, is a plain file) of what ``dir_fd`` holds that is not hidden and not a link, sorted."""
    try:
        with os.scandir(dir_fd) as entries:
            return sorted((e.name, e.is_file(follow_symlinks=False)) for e in entries
                          if not e.name.startswith(".") and not e.is_symlink())
    except OSError:
        return []


def _gpu_number(run_fd: int) -> int | None:
    """``GPU number: N`` from the newest start's ``<ts>/<ts>.log``: the world size mmengine ran with."""
    starts = [name for name, is_file in _listing(run_fd) if not is_file and START_DIR.match(name)]
    head = _read(run_fd, f"{starts[-1]}/{starts[-1]}.log", LOG_HEAD_BYTES, whole=False) if starts else None
    for line in (head or b"").splitlines():
        key, _, number = line.strip().partition(b": ")
        if key == b"GPU number" and number.isdigit() and len(number) <= 9:  # int() of 4,300 digits raises
            return int(number) or None
    return None


# --- from values to a recipe ---------------------------------------------------------------------------


def _at(values: object, *path: str) -> object:
    for key in path:
        values = values.get(key, UNKNOWN) if isinstance(values, dict) else UNKNOWN
    return values


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _crop(value: object, check: Callable[[str, object], Any] | None = None) -> tuple[int, int] | None:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(_int(v) for v in value)):
        return None
    sides = (value[0], value[1]) if check is None else (check("crop", value[0]), check("crop", value[1]))
    return sides if sides[0] is not None and sides[1] is not None else None


def _evaluation(test_cfg: object, check: Callable[[str, object], Any]) -> str | None:
    mode = _at(test_cfg, "mode")
    if mode == "whole":
        return "whole image"
    window, stride = _crop(_at(test_cfg, "crop_size"), check), _crop(_at(test_cfg, "stride"), check)
    if mode == "slide" and window and stride:
        return f"sliding window {window[0]}×{window[1]}, stride {stride[0]}×{stride[1]}"
    return None


def _init(values: dict[str, object]) -> str | None:
    """Where the weights start: prove's model.py names it in ``pretrained``; a dump in the model dict."""
    found = values.get("pretrained", UNKNOWN)
    if found is UNKNOWN:
        model = values.get("model")
        found = _at(model, "pretrained")
        if found is UNKNOWN or found is None:
            found = _at(model, "backbone", "init_cfg", "checkpoint")
            if _at(model, "backbone", "init_cfg") is None:
                found = None if found is UNKNOWN else found
    if found is None or found is False:
        return "from scratch"
    return Path(found).name if isinstance(found, str) else None


def _trained(values: dict[str, object], source: Path, gpus: Callable[[], int | None]) -> TrainedConfig:
    check = Checker(source)
    # The crop the training pipeline applies; the top-level crop_size mmseg configs also define otherwise.
    pipeline = _at(values, "train_dataloader", "dataset", "pipeline")
    crops = [_crop(_at(step, "crop_size"), check) for step in (pipeline if isinstance(pipeline, list) else [])
             if _at(step, "type") == "RandomCrop"]
    schedulers = values.get("param_scheduler")
    steps = [schedulers] if isinstance(schedulers, dict) else schedulers if isinstance(schedulers, list) else None
    types = [check("scheduler", _at(s, "type")) for s in steps or ()]
    warmups = [check("warmup", _at(s, "end")) for s in steps or () if _at(s, "type") == "LinearLR"]
    every_type = steps is not None and None not in types
    per_gpu = check("batch_size", _at(values, "train_dataloader", "batch_size"))
    total = check("batch_size", values.get("total_batch_size"))
    if total is None and per_gpu is not None and (world := gpus()) is not None:
        total = check("batch_size", per_gpu * world)
    return TrainedConfig(
        max_iters=check("max_iters", _at(values, "train_cfg", "max_iters")),
        batch_size=per_gpu if total is None else total,
        batch_is_per_gpu=total is None and per_gpu is not None,
        crop_size=crops[0] if crops else _crop(values.get("crop_size"), check),
        optimizer=check("optimizer", _at(values, "optim_wrapper", "optimizer", "type")),
        lr=check("lr", _at(values, "optim_wrapper", "optimizer", "lr")),
        warmup=warmups[0] if warmups else (0 if every_type else None),
        scheduler="Poly" if "PolyLR" in types else (types[-1] if every_type and types else None),
        val_interval=check("val_interval", _at(values, "train_cfg", "val_interval")),
        checkpoint_interval=check("checkpoint_interval", _at(values, "default_hooks", "checkpoint", "interval")),
        seed=check("seed", _at(values, "randomness", "seed")),
        evaluation=_evaluation(_at(values, "model", "test_cfg"), check),
        sync_bn=None if values.get("sync_bn", UNKNOWN) is UNKNOWN else bool(values.get("sync_bn")),
        init=check("init", _init(values)) if source.parent.name != CONFIG_DIR else None,
        source=source,
        rejected=tuple(check.rejected.values()),
    )


# --- the report's table -------------------------------------------------------------------------------

# Each row of plan.configuration_rows, and the fields its cell shows (the derived rows: several).
_ROW_FIELDS = {
    "Iterations": ("max_iters",), "Batch size": ("batch_size",), "Total samples": ("max_iters", "batch_size"),
    "Gradient steps": ("max_iters",), "Crop size": ("crop_size",), "Optimizer": ("optimizer",),
    "Base LR": ("lr",), "Warmup": ("warmup",), "LR scheduler": ("scheduler",),
    "Val interval": ("val_interval",), "Checkpoint interval": ("checkpoint_interval",),
}
_NOTE_NAMES = {"max_iters": "iterations", "batch_size": "batch size", "crop_size": "crop size",
               "optimizer": "optimizer", "lr": "lr", "warmup": "warmup", "scheduler": "LR scheduler",
               "val_interval": "val interval", "checkpoint_interval": "checkpoint interval"}


def trained_rows(variants: Sequence[Variant], runs_by_variant: Mapping[str, Sequence[tuple[str, TrainedConfig | None]]],
                 reference: str | None = None) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """``configuration_rows(variants)``, each cell from what the variant's runs trained with, and notes.

    ``runs_by_variant``: variant name -> (run label, its ``read_trained_config``). Runs that agree give
    their value; runs that disagree give every value, joined by " / ", and a note naming the runs;
    where no run recorded a field, the cell is the template's. A note also says where what was trained
    differs from what the template gives today. An LR's factor is against what ``reference`` (default:
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
        per_run = [_run_cells(variant, c, reference_lr) for _, c in runs]
        column = {}
        for label, cells in template:
            seen = list(dict.fromkeys(cell for c in per_run if (cell := c[label]) is not None))
            # a variant found under --root has no template: what none of its runs recorded is not known
            column[label] = " / ".join(seen) if seen else "n/a" if variant.lr_rule == AS_TRAINED else cells[index]
        columns.append(column)
        notes += _notes(variant, runs)
    return [(label, [column[label] for column in columns]) for label, _ in template], notes


RunsByVariant = Mapping[str, Sequence[tuple[str, "TrainedConfig | None"]]]


def _reference_lr(variants: Sequence[Variant], runs_by_variant: RunsByVariant, reference: str | None) -> float | None:
    """The LR the reference variant trained with (its runs', when they agree), else its template's."""
    ref = next((v for v in variants if v.name == reference), variants[0] if variants else None)
    if ref is None or ref.per_model:
        return None
    trained = {c.lr for _, c in runs_by_variant.get(ref.name, ()) if c is not None and c.lr is not None}
    return trained.pop() if len(trained) == 1 else (ref.lr or None)


def _run_cells(variant: Variant, config: TrainedConfig, reference_lr: float | None) -> dict[str, str | None]:
    """One run's cell of each row (plan's formats, on the variant with what was trained put in); ``None``
    where its config recorded none of what the row shows."""
    changes: dict[str, object] = {"max_iters": config.max_iters, "batch_size": config.batch_size,
                                  "crop_size": config.crop_size, "lr": config.lr, "warmup_iters": config.warmup,
                                  "val_interval": config.val_interval,
                                  "checkpoint_interval": config.checkpoint_interval}
    if config.lr is not None and reference_lr:  # the factor is against what the reference trained with
        changes["lr_scale"] = round(config.lr / reference_lr, 6)
    trained = replace(variant, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
    cells = {label: row[0] for label, row in configuration_rows([trained])}
    cells["Optimizer"] = config.optimizer or cells["Optimizer"]
    cells["LR scheduler"] = config.scheduler or cells["LR scheduler"]
    if config.batch_is_per_gpu:  # the GPU count is unknown: neither a total batch nor a total of samples
        cells["Batch size"] += " per GPU"
        cells["Total samples"] = "? (GPU count unknown)"
    return {label: cell if any(getattr(config, f) is not None for f in _ROW_FIELDS[label]) else None
            for label, cell in cells.items()}


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
    for field, name in _NOTE_NAMES.items():
        groups: dict[str, list[str]] = {}
        for label, config in runs:
            text = _texts(config)[field]
            if text is not None:
                groups.setdefault(text, []).append(label)
        # by value, not by text: "16 per GPU" where the template gives 16 is no difference worth a note
        same = any(getattr(config, field) == getattr(today, field) for _, config in runs)
        template = "" if same or now[field] in groups else f"; the template now gives {now[field]}"
        if len(groups) == 1 and template:
            notes.append(f"{variant.name}: trained with {name} {next(iter(groups))}{template}")
        elif len(groups) > 1:
            parts = [f"{_listed(labels)} {'trained ' if not i else ''}with {name} {text}"
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
