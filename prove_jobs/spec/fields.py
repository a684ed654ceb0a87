"""Checking a TOML table field by field: one-line errors that name the file and the field."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError


def crop(path: Path, key: str, value: Any) -> tuple[int, int]:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(c, int) and c > 0 for c in value)):
        raise SpecError(path, key, f"must be [height, width] in pixels, got {value!r}")
    return value[0], value[1]


WEIGHTS_CACHE = ".prove-jobs/weights"  # below the data root, unless the sweep's weights_cache says where
ZERO_ALLOWED = {"max_requeues", "num_workers", "seed", "gpus_per_node"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(path: Path, key: str, text: str, *, hint: str, unset: list[str] | None = None) -> str:
    """``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error naming ``key``.

    ``unset``: a preview (``plan``, ``render``) keeps such a variable as written and lists it there.
    """

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        if unset is not None:
            unset.append(name)
            return match.group(0)
        raise SpecError(path, key, f"${{{name}}} is not set: export {name}=/path ({hint})")

    return _ENV.sub(sub, text)


def find_template(dirs: Sequence[Path], relative: str) -> Path:
    """The first of ``dirs`` (a sweep's own templates, then the shipped ones) that holds ``relative``; the first's
    path when none does (errors name it)."""
    for folder in dirs:
        if (folder / relative).is_file():
            return folder / relative
    return dirs[0] / relative


def require(path: Path, raw: Mapping[str, Any], key: str) -> Any:
    if key not in raw:
        raise SpecError(path, key, "missing (required)")
    return raw[key]


def as_str(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(path, key, f"must be a string, got {value!r}")
    return value


def seed_list(path: Path, key: str, value: Any) -> tuple[int, ...]:
    """``[0, 1, 2]``: distinct seeds, each a whole number >= 0 (mmengine's ``randomness.seed``)."""
    if not (isinstance(value, list) and value and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0
                                                          for k in value)):
        raise SpecError(path, key, f"must be a non-empty list of seeds (whole numbers >= 0), got {value!r}")
    if len(set(value)) != len(value):
        raise SpecError(path, key, f"lists a seed twice: {value!r}")
    return tuple(value)


def str_list(path: Path, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SpecError(path, key, f"must be a non-empty list of names, got {value!r}")
    return value


def refuse_duplicates(path: Path, key: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SpecError(path, key, f"{name!r} is listed twice")
        seen.add(name)


def refuse_unknown(path: Path, prefix: str, raw: Mapping[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise SpecError(
            path, prefix + unknown[0], f"unknown field (valid fields are: {', '.join(sorted(valid))})"
        )


def dataclass_from(path: Path, key: str, raw: Any, cls: type[Any]) -> Any:
    if not isinstance(raw, dict):
        raise SpecError(path, key, "must be a table")
    return cls(**checked_fields(path, key, raw, cls))


def checked_fields(path: Path, key: str, raw: Mapping[str, Any], cls: type[Any]) -> dict[str, Any]:
    """Type-check a table against a dataclass's fields (types taken from its defaults)."""
    specs = {f.name: f for f in fields(cls)}
    refuse_unknown(path, f"{key}.", raw, set(specs))
    checked: dict[str, Any] = {}
    defaults = cls()
    for name, value in raw.items():
        default = getattr(defaults, name)
        where = f"{key}.{name}"
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SpecError(path, where, f"must be a list of strings, got {value!r}")
            value = tuple(value)
            if name == "extra_sbatch":
                sbatch_options(value, path, where)  # refused here, for every command, before anything is written
        elif isinstance(default, bool) or isinstance(value, bool):
            raise SpecError(path, where, f"unexpected boolean {value!r}")
        elif isinstance(default, int):
            low = 0 if name in ZERO_ALLOWED else 1
            if not isinstance(value, int) or value < low:
                raise SpecError(path, where, f"must be an integer >= {low}, got {value!r}")
        elif name == "max_running":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(path, where, f"must be an integer >= 1 (array tasks running at once), got {value!r}")
        elif name == "mem_gb":
            if not isinstance(value, int | float) or value <= 0:
                raise SpecError(path, where, f"must be a positive number, got {value!r}")
        elif not isinstance(value, str):
            raise SpecError(path, where, f"must be a string, got {value!r}")
        checked[name] = value
    return checked


_SBATCH_OPTION = re.compile(r"--([a-z][a-z0-9-]*)(=.*)?")
# sbatch options prove-jobs or submitit write themselves: the field that sets each, or None.
_OWNED_OPTIONS = {
    "time": "timeout_min", "gres": "gpus_per_node", "gpus-per-node": "gpus_per_node",
    "cpus-per-task": "cpus_per_task", "mem": "mem_gb", "partition": "partition", "account": "account",
    "qos": "qos", "constraint": "constraint", "nodes": "nodes", "ntasks-per-node": "gpus_per_node",
    "job-name": None, "array": None, "output": None, "error": None, "signal": None, "open-mode": None,
    "dependency": None, "wckey": None,
}


def sbatch_options(lines: Iterable[str], path: Path | None = None, where: str = "extra_sbatch") -> dict[str, Any]:
    """``["--exclusive", "--reservation=x"]`` (``#SBATCH`` prefix optional) -> submitit's ``additional_parameters``.

    Long options pass through as written (submitit writes ``--key=value`` back); short ones
    and the options prove-jobs sets itself are refused, naming the field that sets them.
    """
    extra: dict[str, Any] = {}
    for line in lines:
        text = line.removeprefix("#SBATCH").strip()
        match = _SBATCH_OPTION.fullmatch(text)
        if match is None:
            raise SpecError(path or "sweep", where, f"{line!r} is not a long sbatch option like '--exclusive' or "
                                                    "'--reservation=NAME'")
        key, value = match.group(1), match.group(2)
        if key in _OWNED_OPTIONS:
            field = _OWNED_OPTIONS[key]
            instead = f"set resources.{field} instead" if field else "prove-jobs sets it itself"
            raise SpecError(path or "sweep", where, f"{line!r}: {instead}")
        extra[key.replace("-", "_")] = value[1:] if value is not None else True
    return extra


def overrides(path: Path, key: str, raw: Any, allowed: set[str], cls: type[Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise SpecError(path, key, "must be a table of tables")
    out: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        if name not in allowed:
            raise SpecError(path, f"{key}.{name}", f"not in this sweep (sweep has: {', '.join(sorted(allowed))})")
        if not isinstance(table, dict):
            raise SpecError(path, f"{key}.{name}", "must be a table")
        out[name] = checked_fields(path, f"{key}.{name}", table, cls)
    return out


def seeds_by_variant(path: Path, raw: Any, variants: set[str]) -> dict[str, tuple[int, ...]]:
    """``variant_seeds``: the seeds of the variants it names (each a variant of this sweep)."""
    if not isinstance(raw, dict):
        raise SpecError(path, "variant_seeds", "must be a table: VARIANT = [0, 1, 2]")
    for name in raw:
        if name not in variants:
            raise SpecError(path, f"variant_seeds.{name}",
                            f"not a variant of this sweep (variants: {', '.join(sorted(variants))})")
    return {name: seed_list(path, f"variant_seeds.{name}", value) for name, value in raw.items()}


def weights_fields(path: Path, raw: Mapping[str, Any], root: Path, unset: list[str] | None) -> tuple[bool, Path]:
    """``pretrained`` (default true) and ``weights_cache`` (default ``<data_root>/.prove-jobs/weights``)."""
    pretrained = raw.get("pretrained", True)
    if not isinstance(pretrained, bool):
        raise SpecError(path, "pretrained", f"must be true or false, got {pretrained!r}")
    if "weights_cache" not in raw:
        return pretrained, root / WEIGHTS_CACHE
    text = expand(path, "weights_cache", as_str(path, "weights_cache", raw["weights_cache"]),
                  hint="or leave weights_cache out: <data_root>/.prove-jobs/weights", unset=unset)
    return pretrained, absolute(Path(text))


def absolute(path: Path) -> Path:
    """Absolute, but a path still holding an unset ``${VAR}`` (a preview) is shown as written."""
    return path if str(path).startswith("${") else path.expanduser().absolute()
