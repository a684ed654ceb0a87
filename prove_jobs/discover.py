"""Finding runs under a folder: every mmengine or mmcv work dir at any depth, ours or started by hand.

A run is a work dir: prove-jobs metadata, what mmengine leaves (a ``<timestamp>/`` folder of a training
start, ``last_checkpoint``) or what mmcv 1.x (mmseg 0.x) leaves (``<timestamp>.log``, ``*.log.json``,
``latest.pth``). Its own subfolders are not searched (but its ``seed<k>/`` ones, runs of a later sweep
with several seeds), nor hidden folders, nor symbolic links (a link in a shared data root is anyone's
to plant). A folder with only other ``*.log`` files is a run too when no run is found below it: listed
with a note saying why prove-jobs cannot read its logs, never silently skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prove_jobs.errors import RunError
from prove_jobs.listing import Listings
from prove_jobs.logs.layout import is_dir_entry, is_file_entry
from prove_jobs.metadata import read_meta
from prove_jobs.runs import META_FILE, START_DIR, Run, is_start_dir, not_a_seed_dir, seed_of_dir

# A variant's folder as prove-jobs' variants are named (DEMO_REF, WEIGHTS_CITYSCAPES_BS8): where a run without
# metadata is in the layout; a person's folders (work_dirs, alice, mmseg) are not named so.
VARIANT_NAME = re.compile(r"[A-Z0-9_]*[A-Z][A-Z0-9_]*", re.ASCII)
MAX_DEPTH = 8  # below the folder asked about; a data root's runs are 4 deep


RUN_MARKS = "prove_run.json, a <timestamp>/ log folder, last_checkpoint, <timestamp>.log, *.log.json, latest.pth"


def is_run_dir(entries: list[os.DirEntry[str]]) -> bool:
    """Does a folder with these entries hold a training: metadata, mmengine's start folder or checkpoint pointer,
    mmcv's (mmseg 0.x) logs or checkpoint link?"""
    names = {e.name for e in entries}
    return META_FILE in names or "last_checkpoint" in names or "latest.pth" in names or any(
        (is_start_dir(e.name) and is_dir_entry(e)) or (_is_legacy_log(e.name) and is_file_entry(e)) for e in entries)


def holds_logs(entries: list[os.DirEntry[str]]) -> bool:
    """Does a folder that is no run dir hold ``*.log`` files (of a shape prove-jobs may not read)?"""
    return any(e.name.endswith(".log") and not e.name.startswith(".") and is_file_entry(e) for e in entries)


def _is_legacy_log(name: str) -> bool:
    """mmcv's logs at the top of a work dir: ``<timestamp>.log``, ``<anything>.log.json``."""
    return name.endswith(".log.json") or (name.endswith(".log") and START_DIR.match(name[:-4]) is not None)


def looks_like_run(folder: Path) -> bool:
    """A run dir, or a folder of logs (``status DIR`` then says why none could be read)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return is_run_dir(entries) or holds_logs(entries)


def discover_runs(root: Path, *, max_depth: int = MAX_DEPTH, warnings: list[str] | None = None,
                  listings: Listings | None = None) -> list[Run]:
    """Every run at or below ``root``, in path order; a folder named like a seed's without being one
    (``seed01``, ``seed2\n``: prove-jobs writes ``seed<k>``, k as the sweep does) is no run of that seed: left
    out, with one line in ``warnings``. ``listings``: each run dir's ``scandir`` goes there, for ``status``."""
    root = Path(root)
    found: list[Run] = []

    def seed_folders(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
        """The real folders among ``entries`` that are not a seed folder's look-alike (those: a warning each)."""
        folders = []
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            if not_a_seed_dir(entry.name):
                if warnings is not None:
                    warnings.append(f"{os.path.join(os.path.dirname(entry.path), ascii(entry.name))}: not a seed "
                                    f"folder (prove-jobs names them seed<k>: seed1, not seed01); left out")
                continue
            folders.append(entry)
        return folders

    def add(run: Run, entries: list[os.DirEntry[str]]) -> None:
        found.append(run)
        if listings is not None:
            listings[run.run_dir] = entries

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        if is_run_dir(entries):
            add(run_at(folder, root, has_meta=any(e.name == META_FILE for e in entries)), entries)
            # a model trained with one seed, then with several: their seed<k>/ folders are runs of their own
            for entry in seed_folders(entries):
                if seed_of_dir(entry.name) is not None:
                    walk(Path(entry.path), max_depth)
            return
        before = len(found)
        if depth < max_depth:
            for entry in seed_folders(entries):
                walk(Path(entry.path), depth + 1)
        if len(found) == before and holds_logs(entries):  # logs, no run below: a run whose logs say why
            add(run_at(folder, root, has_meta=False), entries)

    walk(root, 0)
    return found


def run_at(folder: Path, root: Path | None = None, *, has_meta: bool = True) -> Run:
    """The run in ``folder``, named by its path as a person names it, the same in every view (``status RUN_DIR``,
    ``--curve``, ``--root`` from any folder above it, ``report --root``): never after a file inside it (a work
    dir holding mmengine's ``config.py`` is not the run ``config``).

    In prove-jobs' layout (``<VARIANT>/<method>/<dataset>/<model>[/seed<k>]``, as its metadata confirms or,
    for a run without metadata, where the variant's folder is named as variants are: upper case, digits,
    ``_``) by that; else by its folder's name, the variant its parent folder's
    (``work_dirs/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024``: model ``pspnet_r50-d8_4xb2-40k_cityscapes-512x1024``,
    variant ``work_dirs``). ``root`` (the folder searched) does not change the name. ``has_meta=False``:
    the caller's listing has no metadata file (a hand-started run): not looked for again."""
    folder = folder if isinstance(folder, Path) and folder.is_absolute() else Path(folder).absolute()
    parts = folder.parts
    try:
        meta = read_meta(folder) if has_meta else None
    except RunError:
        meta = None
    seeded = seed_of_dir(folder.name) is not None  # <model>/seed<k>/: the layout is one level deeper
    parts = parts[:-1] if seeded else parts
    in_layout = len(parts) >= 5 and (
        (meta is not None and parts[-1] == meta.model and parts[-4] == meta.variant)
        or (meta is None and VARIANT_NAME.fullmatch(parts[-4]) is not None))
    if in_layout:
        return Run.from_dir(folder)
    model = meta.model if meta is not None else folder.name
    if meta is not None and meta.seed is not None and seeded:
        return Run(model=model, variant=meta.variant, method="-", dataset="-", data_root=folder.parent.parent,
                   path=folder, seed=meta.seed)
    variant = meta.variant if meta is not None else folder.parent.name or "-"
    return Run(model=model, variant=variant, method="-", dataset="-", data_root=folder.parent, path=folder)
