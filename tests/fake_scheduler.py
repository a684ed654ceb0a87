"""One fake SLURM for the unit tests: ``squeue``, ``sacct``, ``sinfo``, ``scontrol`` and ``scancel`` on PATH.

It plugs in at the one seam to the scheduler, ``prove_jobs.scheduler.call``, which runs whatever SLURM command
PATH finds: nothing in prove_jobs is patched, and what is counted is what a controller would see (a CLI run in a
subprocess sees the same cluster). The ``fake_cluster`` fixture (tests/conftest.py) puts it first on PATH.

``<dir>/calls`` gets one line per call (``squeue --noheader ...``). ``<dir>/states`` may hold
``JOB STATE [%FIELD=VALUE ...]`` lines: squeue's word on each job (default RUNNING; ``GONE``: squeue does not
list it), with any of its fields set (``%r=Priority``, ``%S=N/A``). A file ``<dir>/down`` makes every call fail
as an unreachable controller does. sacct knows nothing more than squeue; sinfo, scontrol and scancel succeed
and say nothing (``sinfo`` lists one partition).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMMANDS = ("squeue", "sacct", "sinfo", "scontrol", "scancel")

SCRIPT = """#!{python}
import os, sys
here = {here!r}
command = os.path.basename(sys.argv[0])
with open(os.path.join(here, "calls"), "a") as log:
    log.write(" ".join([command, *sys.argv[1:]]) + "\\n")
if os.path.exists(os.path.join(here, "down")):
    sys.stderr.write("slurm_load_jobs error: Unable to contact slurm controller\\n")
    sys.exit(1)
if command == "sinfo":
    print("debug")
if command != "squeue":
    sys.exit(0)  # sacct: accounting knows nothing more; scontrol and scancel: done
states, fields = {{}}, {{}}
if os.path.exists(os.path.join(here, "states")):
    for line in open(os.path.join(here, "states")):
        if line.strip():
            job, state, *given = line.split()
            states[job], fields[job] = state, dict(g.split("=", 1) for g in given)
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
values = {{"%T": None, "%N": "gpu01", "%u": "alice", "%r": "None", "%V": "2026-01-01T00:00:00",
          "%S": "2026-01-01T00:01:00"}}
for job in filter(None, args.get("--jobs", "").split(",")):
    state = states.get(job, "RUNNING")
    if state == "GONE":
        continue
    said = {{**values, **fields.get(job, {{}})}}
    print("|".join(job if f == "%i" else state if f == "%T" else said.get(f, "?") for f in args["--format"].split("|")))
"""


def install(folder: Path) -> Path:
    """Write the fake commands into ``folder`` (put it first on PATH); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = folder / name
        path.write_text(SCRIPT.format(python=sys.executable, here=str(folder)))
        path.chmod(0o755)
    return folder


def say(folder: Path, *lines: str) -> None:
    """What squeue says from now on: ``JOB STATE [%FIELD=VALUE ...]`` lines (see the module's docstring)."""
    (folder / "states").write_text("".join(f"{line}\n" for line in lines))


def down(folder: Path) -> None:
    """The controller stops answering."""
    (folder / "down").touch()


def calls(folder: Path, command: str = "") -> list[list[str]]:
    """The logged calls (of ``command`` only, if given), each as its words."""
    log = folder / "calls"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split() for line in lines if line.startswith(command)]


def slurm_runs(root: Path, count: int, *, array: str = "4242", variant: str = "V") -> list[str]:
    """``count`` runs of one variant under ``root``, each a started SLURM array task with one logged
    iteration; returns their job ids."""
    import json

    from prove_jobs.identity import current_host
    from prove_jobs.metadata import RunMeta, write_meta
    from prove_jobs.runs import Run

    jobs = []
    for index in range(count):
        run = Run(model=f"model{index:02d}", variant=variant, method="baseline", dataset="cityscapes", data_root=root)
        scalars = run.run_dir / "20260101_000000" / "vis_data" / "scalars.json"
        scalars.parent.mkdir(parents=True)
        scalars.write_text(json.dumps({"lr": 0.01, "data_time": 0.2, "loss": 1.5, "time": 0.5, "iter": 5,
                                       "memory": 812, "step": 5}) + "\n")
        job = f"{array}_{index}"
        write_meta(run.run_dir, RunMeta(model=run.model, variant=variant, executor="slurm", host=current_host(),
                                        user="alice", job_id=job, submitted_at=100.0, started_at=101.0,
                                        max_iters=40, attempts=1))
        jobs.append(job)
    return jobs


def path_with(folder: Path) -> str:
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
