from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "job_templates"
SWEEPS = TEMPLATES / "sweeps"


@pytest.fixture
def weird_tmp_path(tmp_path: Path) -> Path:
    """A folder whose name has spaces, quotes and shell syntax (after submitit's conftest)."""
    path = tmp_path / "a dir with 'quotes'; echo pwned"
    path.mkdir()
    return path


@pytest.fixture
def templates_copy(tmp_path: Path) -> Path:
    """A writable copy of job_templates/ for tests that add or break templates."""
    dest = tmp_path / "templates"
    shutil.copytree(TEMPLATES, dest)
    return dest


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def checkpointed(run_dir: Path) -> int:
    """The iteration of the checkpoint mmengine's ``last_checkpoint`` names (0 if none yet).

    mmengine writes that pointer only after the checkpoint itself: a run killed or preempted
    after this says N resumes from N.
    """
    name = Path(read_or_empty(run_dir / "last_checkpoint").strip()).stem
    return int(name[5:]) if name.startswith("iter_") and name[5:].isdigit() else 0


def write_sweep(folder: Path, body: str, name: str = "sweep.toml") -> Path:
    path = folder / name
    path.write_text(body)
    return path


@pytest.fixture(autouse=True)
def private_log_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`status` keeps a log cache under $XDG_CACHE_HOME: each test gets its own, none touches ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
