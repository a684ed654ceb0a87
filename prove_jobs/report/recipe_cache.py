"""The runs' recipes, read once: a config parsed again only when its run dir or its file changed.

Parsing a run's config (``trained.read_trained_config``: ``ast.parse`` of 10-30 KB and the walk of its
tree) costs 1-2 ms; a report of 10,000 runs spent 15 s of its 24 doing it again on every look. This keeps
each run's recipe in ``$XDG_CACHE_HOME/prove-jobs/recipes/<scope>.marshal`` (the log cache's file name,
in a folder of its own), keyed by what a change would change: the run dir's own ``(inode, mtime)`` (a
config dumped, a start added or removed) and the ``(inode, size, mtime)`` of the file it was read from
(and of prove's ``model.py`` beside it). A warm look costs two or three ``stat`` calls a run, no open.

Like the log cache: a file not owned by the user is not loaded (marshal is not for untrusted data), a
corrupt one means starting cold, and what is saved is the runs looked at this time (so the file holds
no more than the scope has). A value the config lacks is ``None`` in the cache as in the report.
"""

from __future__ import annotations

import marshal
import os
from dataclasses import astuple, fields
from pathlib import Path

from prove_jobs.report.recipe import TrainedConfig
from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE, MODEL_FILE

_FORMAT = 2  # 2: TrainedConfig.checkpoint_by_epoch
_FIELDS = tuple(f.name for f in fields(TrainedConfig))
Stamp = tuple[int, int, int] | None  # (inode, size, mtime_ns) of a file, None: not there
Entry = tuple[tuple[int, int], str | None, tuple[Stamp, ...], tuple[object, ...] | None, tuple[str, ...]]


def recipes_path(scope: Path | None) -> Path:
    """``$XDG_CACHE_HOME/prove-jobs/recipes/<the log cache's file name for scope>``."""
    from prove_jobs.logs.cache_files import default_cache_path

    logs = default_cache_path(scope)
    return logs.parent.parent / "recipes" / logs.name


def _stamp(path: str) -> Stamp:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class RecipeCache:
    """``read(run_dir)`` as ``read_trained_config``, answered from the cache file while nothing changed."""

    def __init__(self, path: Path | None, scope: Path | None = None) -> None:
        self.path, self.scope = path, scope
        self._old: dict[str, Entry] = self._load() if path is not None else {}
        self._new: dict[str, Entry] = {}
        self.dirty = False

    def read(self, run_dir: Path, why: list[str] | None = None) -> TrainedConfig | None:
        from prove_jobs.report.trained import read_recipe

        key = str(run_dir)
        try:
            st = os.stat(run_dir)
        except OSError:
            return read_recipe(run_dir, why)[0]
        folder = (st.st_ino, st.st_mtime_ns)
        entry = self._old.get(key)
        try:
            if entry is not None and entry[0] == folder and self._stamps(key, entry[1]) == entry[2]:
                config = None if entry[3] is None else _config(entry[3])
                if config is not None or entry[3] is None:
                    self._new[key] = entry
                    if why is not None:
                        why += entry[4]
                    return config
        except (TypeError, ValueError, IndexError):
            pass  # an entry of another shape: read the config again
        notes: list[str] = []
        config, final = read_recipe(run_dir, notes)
        if why is not None:
            why += notes
        source = None if config is None or config.source is None else os.path.relpath(config.source, run_dir)
        if final:
            row = None if config is None else tuple(str(v) if isinstance(v, Path) else v for v in astuple(config))
            self._new[key] = (folder, source, self._stamps(key, source), row, tuple(notes))
            self.dirty = True
        return config

    @staticmethod
    def _stamps(run_dir: str, source: str | None) -> tuple[Stamp, ...]:
        if source is None:
            return ()
        if source == f"{CONFIG_DIR}/{CONFIG_FILE}":
            return _stamp(os.path.join(run_dir, source)), _stamp(os.path.join(run_dir, CONFIG_DIR, MODEL_FILE))
        return (_stamp(os.path.join(run_dir, source)),)

    def _load(self) -> dict[str, Entry]:
        assert self.path is not None
        try:
            with self.path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_uid != os.getuid():
                    return {}  # written by someone else: marshal is not for untrusted data
                fh.readline(1 << 16)  # the scope
                body = marshal.loads(fh.read())
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if not (isinstance(body, tuple) and len(body) == 2 and body[0] == _FORMAT and isinstance(body[1], dict)):
            return {}
        return body[1]

    def save(self) -> None:
        """Write the runs looked at this time (atomically); errors are left to the caller."""
        if self.path is None or not (self.dirty or self._new.keys() != self._old.keys()):
            return
        from prove_jobs.logs.cache_files import scope_line, sweep_folder

        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with temp.open("wb") as fh:
            fh.write(scope_line(self.scope) + marshal.dumps((_FORMAT, self._new)))
        os.replace(temp, self.path)
        sweep_folder(self.path)  # the files of scopes gone or unused for two weeks


def _config(row: tuple[object, ...]) -> TrainedConfig | None:
    """The config a row was made from (``astuple``'s order, ``source`` as a string). Its fields are set as
    ``__init__`` sets them, without it: a frozen dataclass's ``__init__`` sets each through
    ``object.__setattr__`` (a fifth of a warm 10,000-run report's recipes), and it checks nothing."""
    if len(row) != len(_FIELDS):
        return None
    config: TrainedConfig = object.__new__(TrainedConfig)
    values = config.__dict__
    values.update(zip(_FIELDS, row, strict=True))
    source = values["source"]
    values["source"] = None if source is None else Path(str(source))
    return config
