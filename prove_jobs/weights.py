"""Pretrained checkpoints: what a model template names, and the shared cache every run loads it from.

A model template has one top-level line ``pretrained = ...``: a URL, an ``open-mmlab://NAME`` (mmengine's
own table says which URL), an absolute path, or ``None``/``False`` (from scratch). A URL's file is
fetched once, on the login node, into ``<weights_cache>/<its file name>`` (:mod:`prove_jobs.weight_cache`);
the run's ``model.py`` names that file, so no compute node ever downloads (docs/weights.md).

No torch or mmengine here: ``open-mmlab://`` names are read from mmengine's JSON without importing it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.errors import ProveJobsError, SpecError

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's: the sha256 prefix in a checkpoint's file name
OPENMMLAB = ("open-mmlab://", "openmmlab://")  # both spellings mmengine's CheckpointLoader accepts
FIELD = "pretrained"


class WeightsError(ProveJobsError):
    """A checkpoint cannot be resolved, fetched or trusted; the message names the file or URL."""


@dataclass(frozen=True)
class Checkpoint:
    """The pretrained checkpoint a run starts from.

    ``source``: as the template writes it; ``url``: what is fetched (``None``: a local file, used where it
    is); ``path``: the file the run loads; ``hash_prefix``: the sha256 prefix its name carries ("": none).
    """

    source: str
    url: str | None
    path: Path
    hash_prefix: str

    @property
    def local(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class RenderedModel:
    """A model template as a run writes it: ``text`` names this user's cache, ``portable`` the source."""

    text: str
    portable: str
    checkpoint: Checkpoint | None
    from_scratch: bool


# --- the template's line --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    value: str | None  # None: from scratch (the template says None or False)
    first: int  # 1-based, inclusive
    last: int


def _read_line(template: Path, text: str) -> _Line | None:
    """The template's top-level ``pretrained = <literal>``, read with ast (never run); ``None`` when absent."""
    import ast

    try:
        tree = ast.parse(text, filename=str(template))
    except SyntaxError as exc:
        raise SpecError(template, None, f"not valid Python (line {exc.lineno}: {exc.msg})") from None
    found = [node for node in tree.body if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == FIELD for t in node.targets)]
    if not found:
        return None
    if len(found) > 1:
        raise SpecError(template, FIELD, f"assigned {len(found)} times (lines "
                        f"{', '.join(str(n.lineno) for n in found)}): assign it once, at the top")
    node = found[0]
    last = node.end_lineno or node.lineno
    if node.col_offset or any(other is not node and other.lineno <= last and (other.end_lineno or other.lineno)
                              >= node.lineno for other in tree.body):
        raise SpecError(template, FIELD, f"line {node.lineno}: give it a line of its own (prove-jobs rewrites "
                        "that line for each run)")
    written = ast.get_source_segment(text, node.value) or "?"
    try:
        value = ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError):
        value = ...
    if value is None or value is False:
        return _Line(None, node.lineno, last)
    if len(node.targets) != 1 or not isinstance(value, str) or not value:
        raise SpecError(template, FIELD, f"must be one literal: a URL, 'open-mmlab://NAME', an absolute path, None "
                        f"or False (got {written})")
    return _Line(value, node.lineno, last)


def template_source(template: Path, text: str) -> str | None:
    """What the template's ``pretrained`` names (``None``: from scratch, or no such line)."""
    line = _read_line(template, text)
    return line.value if line else None


def resolve(template: Path, source: str, cache: Path) -> Checkpoint:
    """The checkpoint ``source`` (as ``template`` writes it) names, with its place in ``cache``."""
    if source.startswith(("http://", "https://")):
        url: str | None = source
    elif source.startswith(OPENMMLAB):
        url = openmmlab_url(template, source.split("://", 1)[1])
    elif source.startswith("/"):
        url = None
    else:
        scheme = source.split("://", 1)[0] + "://" if "://" in source else ""
        raise SpecError(template, FIELD, f"{source!r}: " + (f"{scheme} checkpoints are not fetched by prove-jobs"
                                                              if scheme else "a relative path") +
                        "; write an http(s):// URL, 'open-mmlab://NAME', or the absolute path of a local file")
    if url is None:
        # a link the user keeps (/models/x.pth -> /mnt/...) is named by its target: the job opens no link
        path = Path(os.path.realpath(source))
        return Checkpoint(source, None, path, hash_prefix(path.name))
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not name or name in (".", "..") or name.startswith("."):
        raise SpecError(template, FIELD, f"{url}: no file name at the end of the URL to keep it under")
    return Checkpoint(source, url, cache / name, hash_prefix(name))


def hash_prefix(name: str) -> str:
    """The sha256 prefix a checkpoint's file name carries, as torch.hub reads it ("" when none)."""
    match = HASH_REGEX.search(name)
    return match.group(1) if match else ""


def openmmlab_url(template: Path, name: str) -> str:
    """The URL mmengine's own table gives ``open-mmlab://name`` (renamed names through ``deprecated.json``)."""
    hub = _mmengine_hub()
    if hub is None:
        raise WeightsError(f"{template}: {FIELD} = 'open-mmlab://{name}' is resolved through mmengine's table, and "
                           "mmengine is not installed here: pip install mmengine (or the train extra), or write "
                           "the checkpoint's URL in the template")
    name = _json(hub / "deprecated.json").get(name, name)
    url = _json(hub / "openmmlab.json").get(name)
    if not isinstance(url, str):
        raise SpecError(template, FIELD, f"open-mmlab://{name} is not in mmengine's table ({hub / 'openmmlab.json'}):"
                        " write the checkpoint's URL instead")
    if not url.startswith(("http://", "https://")):
        raise SpecError(template, FIELD, f"open-mmlab://{name} is a file under ~/.mmengine in mmengine's table "
                        f"({url}), not a URL: write its absolute path instead")
    return url


_TABLES: dict[Path, dict[str, str]] = {}


def _json(path: Path) -> dict[str, str]:
    if path not in _TABLES:
        import json

        try:
            table = json.loads(path.read_text())
        except FileNotFoundError:
            table = {}
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{path}: mmengine's checkpoint table does not read ({exc})") from None
        _TABLES[path] = table if isinstance(table, dict) else {}
    return _TABLES[path]


def _mmengine_hub() -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec("mmengine")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "hub"


def render_model(template: Path, text: str, cache: Path, pretrained: bool) -> RenderedModel:
    """``model.py`` for a run: the template with its ``pretrained`` line naming the cached file (or ``None``).

    ``pretrained``: the sweep's; false makes the run from scratch whatever the template names. A
    template without a ``pretrained`` line is used as it is.
    """
    line = _read_line(template, text)
    if line is None:
        return RenderedModel(text, text, None, False)
    lines = text.splitlines(keepends=True)

    def swap(new: str) -> str:
        return "".join([*lines[: line.first - 1], new + "\n", *lines[line.last:]])

    if line.value is None or not pretrained:
        why = "the template says so" if line.value is None else f"the sweep says pretrained = false; {line.value}"
        scratch = swap(f"{FIELD} = None  # from scratch ({why})")
        return RenderedModel(scratch, scratch, None, True)
    checkpoint = resolve(template, line.value, cache)
    if checkpoint.local:
        return RenderedModel(text, text, checkpoint, False)
    note = f"  # {checkpoint.url} (prove-jobs weight cache)"
    return RenderedModel(swap(f"{FIELD} = {str(checkpoint.path)!r}{note}"),
                         swap(f"{FIELD} = {checkpoint.url!r}{note}"), checkpoint, False)
