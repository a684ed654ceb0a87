"""A run and its layout: where a (model, variant, seed) lives on disk, and the name of every file prove-jobs keeps
in it.

A run is one (model, variant) of a sweep. Its directory is the mmengine ``work_dir``::

    <data_root>/<VARIANT>/<method>/<dataset>/<model>/          (one seed)
    <data_root>/<VARIANT>/<method>/<dataset>/<model>/seed<k>/  (a variant trained with several seeds)
        prove_run.json        metadata (prove_jobs.metadata; written atomically)
        prove_run.json.lock   its mutex
        prove_train.lock      the training lock (prove_jobs.locks)
        prove_conflicts.json  lock conflicts met by each user's submit (prove_jobs.conflicts)
        prove/model.py        the model template, copied at submit time
        prove/config.py       the variant layer on top of it (what the payload loads)
        prove/job.out, .err   links to the latest job's scheduler output (prove_jobs.job_logs)
        <timestamp>/...       what mmengine writes (logs, vis_data)
        iter_N.pth, last_checkpoint
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from prove_jobs.errors import RunError

META_FILE = "prove_run.json"
META_MUTEX = "prove_run.json.lock"
TRAIN_LOCK = "prove_train.lock"
CONFLICTS_FILE = "prove_conflicts.json"
CONFIG_DIR = "prove"
CONFIG_FILE = "config.py"
MODEL_FILE = "model.py"
# Links to the scheduler's stdout/stderr files of the run's latest job (they live with submitit's pickles).
JOB_STDOUT = "job.out"
JOB_STDERR = "job.err"
# mmengine names the folder of each training start after its start time: <work_dir>/20260203_101010/
START_DIR = re.compile(r"^\d{8}_\d{6}$")
# seed<k>, k as the sweep writes it (f"seed{k}"): ASCII digits, no leading zero, nothing after (`$` let "seed2\n" in)
SEED_DIR = re.compile(r"seed(0|[1-9][0-9]*)", re.ASCII)
SEED_LIKE = re.compile(r"seed\d")  # any digit, anything after: a name one could take for a seed folder


@dataclass(frozen=True)
class Run:
    """One (model, variant, seed) of a sweep and where it lives on disk."""

    model: str
    variant: str
    method: str
    dataset: str
    data_root: Path
    path: Path | None = None  # a work dir outside the layout (found by `status --root`): where it is
    seed: int | None = None  # one of several seeds of its variant (in seed<k>/); None: the variant has one

    @cached_property  # asked for again and again by every reader of a run: built once
    def run_dir(self) -> Path:
        if self.path is not None:
            return self.path
        model_dir = run_dir_for(self.data_root, self.variant, self.method, self.dataset, self.model)
        return model_dir if self.seed is None else model_dir / f"seed{self.seed}"

    @property
    def name(self) -> str:
        """Readable in squeue and in tables: ``<variant>/<model>``, ``<variant>/<model>/seed<k>``."""
        return f"{self.variant}/{self.model}" + ("" if self.seed is None else f"/seed{self.seed}")

    @property
    def options(self) -> str:
        """``--model M --variant V [--seed K]``: how to name this run to a command."""
        return f"--model {self.model} --variant {self.variant}" + ("" if self.seed is None else f" --seed {self.seed}")

    @property
    def config_file(self) -> Path:
        return self.run_dir / CONFIG_DIR / CONFIG_FILE

    @classmethod
    def from_dir(cls, run_dir: Path) -> Run:
        """The run a work dir laid out as ``<data_root>/<VARIANT>/<method>/<dataset>/<model>[/seed<k>]/`` holds."""
        run_dir = run_dir if isinstance(run_dir, Path) and run_dir.is_absolute() else Path(run_dir).absolute()
        seeded = seed_of_dir(run_dir.name)
        parts = run_dir.parts[:-1] if seeded is not None else run_dir.parts
        if len(parts) < 5:
            raise RunError(f"{run_dir}: not a run dir (<root>/<VARIANT>/<method>/<dataset>/<model>[/seed<k>])")
        variant, method, dataset, model = parts[-4:]
        run = cls(model=model, variant=variant, method=method, dataset=dataset,
                  data_root=run_dir.parents[3 if seeded is None else 4], seed=seeded)
        vars(run)["run_dir"] = run_dir  # what run_dir would build again from the parts (10,000 runs: 0.2 s)
        return run


def model_of_dir(run_dir: Path) -> str:
    """The model a run dir is named after: its own name, or its parent's for a ``seed<k>/`` dir."""
    return run_dir.parent.name if seed_of_dir(run_dir.name) is not None else run_dir.name


def seed_of_dir(name: str) -> int | None:
    """``seed3`` -> 3: the folder of one seed of a variant trained with several (only as prove-jobs names it:
    ``seed01`` and ``seed1\n`` are not seed 1's)."""
    found = SEED_DIR.fullmatch(name)
    return None if found is None else int(found.group(1))  # at most 251 digits (a file name): int() is bounded


def not_a_seed_dir(name: str) -> bool:
    """Is ``name`` like a seed folder (``seed01``, ``seed1\n``, ``seed1 ``) without being one?"""
    return SEED_LIKE.match(name) is not None and seed_of_dir(name) is None


def is_start_dir(name: str) -> bool:
    """Is ``name`` the folder mmengine makes for one training start (``20260203_101010``)?"""
    return START_DIR.match(name) is not None


def run_dir_for(data_root: Path, variant: str, method: str, dataset: str, model: str) -> Path:
    return data_root / variant / method / dataset / model
