"""submitit executors for the two places a job can run: a SLURM cluster, or this machine, detached.

The sbatch parameters are built once (:func:`slurm_parameters`) and serve both the executor
and ``submit --dry-run``, which prints the batch script submitit itself would write.

The SLURM commands submitit runs itself are submitit's, not :func:`prove_jobs.scheduler.call`'s: ``sbatch`` when
a job is submitted, and, inside the job, ``scontrol requeue`` from its USR2 handler (a job stopped at its time
limit or preempted). prove-jobs never asks submitit's job objects for their state (that would be submitit's
``sacct``): every other scheduler command goes through ``scheduler.call``.

Where this module reaches into submitit's private API (written against submitit 1.5.4; tests/test_submit.py (the dry
run's script) and tests/test_job_entry.py fail if it changes): :func:`batch_script` calls ``_make_sbatch_string``;
:class:`SubmititLocalPatch` swaps ``submitit.local.local``'s global ``subprocess`` while a local job is submitted
(overriding ``LocalExecutor._submit_command``); both executors override ``_submitit_command_str``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prove_jobs import jobdir
from prove_jobs.distributed import COLLECTIVE_TIMEOUT_VAR
from prove_jobs.jobdir import SUBMITIT_DIR as SUBMITIT_DIR
from prove_jobs.spec import Resources, Sweep

EXECUTORS = ("auto", "slurm", "local")
SIGNAL_DELAY_S = 90  # submitit's --signal=USR2@90: the warning before the time limit
SIGNAL_JITTER_S = 60  # SLURM checks time limits about once a minute and may signal that much early


def job_folder(sweep: Sweep) -> Path:
    """submitit's folder for this user's jobs (pickles, scheduler stdout/stderr): ``%j`` is the job id.

    One per user, not writable by others, in a sticky shared folder (prove_jobs.jobdir): nobody else
    can plant a link or a pickle where a job of yours will be written (a job id is easy to guess).
    """
    return jobdir.job_folder(sweep.data_root)


def slurm_parameters(resources: Resources, *, job_name: str, after_job: str | None = None) -> dict[str, Any]:
    """submitit's ``SlurmExecutor.update_parameters`` for one resource set.

    ``after_job``: start only once that SLURM job has ended, however it ended (afterany).
    """
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": resources.timeout_min,
        "signal_delay_s": SIGNAL_DELAY_S,
        "cpus_per_task": resources.cpus_per_task,
        # one task per GPU, each a training process (mmseg's tools/slurm_train.sh); mmengine's DDP
        # reads its rank from SLURM_PROCID (prove_jobs.distributed)
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks_per_node,
        "setup": list(resources.setup),
        "additional_parameters": sbatch_extra(resources.extra_sbatch),
    }
    if resources.world_size > 1:
        # a rank that dies ends the whole job: the others would wait for it in their next collective
        params["srun_args"] = ["--kill-on-bad-exit=1"]
        params["setup"].append(f"export {COLLECTIVE_TIMEOUT_VAR}={resources.collective_timeout_s}")
    if resources.max_running is not None:
        params["array_parallelism"] = resources.max_running
    if after_job is not None:
        params["additional_parameters"]["dependency"] = f"afterany:{after_job}"
    # --gres rather than --gpus-per-node: older SLURM and gres-only clusters accept it everywhere.
    if resources.gpus_per_node:
        params["gres"] = f"gpu:{resources.gpus_per_node}"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(resources, key) is not None:
            params[key] = getattr(resources, key)
    if resources.mem_gb is not None:
        params["mem"] = f"{int(resources.mem_gb * 1024)}M"
    return params


def make_executor(kind: str, folder: Path, resources: Resources, *, job_name: str,
                  after_job: str | None = None) -> Any:
    """A submitit executor for ``kind`` with the sweep's resources applied."""
    if kind == "local":
        local = DetachedLocalExecutor(folder=folder, max_num_timeout=resources.max_requeues, python=resources.python)
        local.update_parameters(timeout_min=resources.timeout_min, setup=list(resources.setup))
        return local
    slurm = CheckedSlurmExecutor(folder=folder, max_num_timeout=resources.max_requeues, python=resources.python)
    slurm.update_parameters(**slurm_parameters(resources, job_name=job_name, after_job=after_job))
    return slurm


def batch_script(folder: Path, resources: Resources, *, job_name: str, tasks: int) -> str:
    """The sbatch script submitit writes for ``tasks`` runs with these resources (``--dry-run``).

    Built by submitit's own ``_make_sbatch_string`` (submitit 1.5: what ``SlurmExecutor`` calls
    for a submission file), so that what is shown is what would be queued; it needs no SLURM here.
    """
    import shlex

    from submitit.slurm.slurm import _make_sbatch_string

    python = resources.python or shlex.quote(sys.executable)  # as submitit's SlurmExecutor.python
    command = job_command(python, folder)
    params = slurm_parameters(resources, job_name=job_name)
    return str(_make_sbatch_string(command=command, folder=folder, map_count=tasks if tasks > 1 else None, **params))


def sbatch_extra(lines: Sequence[str]) -> dict[str, Any]:
    """``extra_sbatch`` as submitit's dict (already validated when the sweep was loaded)."""
    from prove_jobs.spec.fields import sbatch_options

    return sbatch_options(lines)


CONTROLLER_LOG = "controller.log"


class _DetachedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """The controller as a daemon: its own session, and none of the caller's file descriptors.

    Inheriting stdout/stderr would keep a pipe open for as long as the job runs, so that
    `prove-jobs submit | tee log` (or any caller reading its output) would hang until the
    training ends. The controller's own messages go to ``controller.log`` in its job's folder
    (``<user>/<pid>/``): opened in the user's folder under a random name, never through a link,
    and renamed there once the pid is known. The controller is prove-jobs' own
    (:mod:`prove_jobs.local_controller`), which makes no folder literally named ``%j``.
    """

    def __init__(self, *args: Any, job_folder: Path, **kwargs: Any) -> None:
        from prove_jobs.jobdir import open_user_folder

        kwargs["start_new_session"] = True
        kwargs["stdin"] = subprocess.DEVNULL
        command: Any = args[0] if args else kwargs.pop("args")
        command = ([LOCAL_CONTROLLER if part == SubmititLocalPatch.CONTROLLER else part for part in command]
                   if isinstance(command, list) else command.replace(f" {SubmititLocalPatch.CONTROLLER} ",
                                                                     f" {LOCAL_CONTROLLER} "))
        user_fd = open_user_folder(job_folder.parent)
        try:
            tmp = f".{CONTROLLER_LOG}.{os.urandom(6).hex()}"
            log = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                          dir_fd=user_fd)
            try:
                super().__init__(command, stdout=log, stderr=subprocess.STDOUT, **kwargs)
            except BaseException:
                os.unlink(tmp, dir_fd=user_fd)
                raise
            finally:
                os.close(log)
            self._file_log(user_fd, tmp)
        finally:
            os.close(user_fd)

    def _file_log(self, user_fd: int, tmp: str) -> None:
        from prove_jobs.jobdir import open_job_dir

        job_fd = open_job_dir(user_fd, str(self.pid))
        try:
            os.replace(tmp, CONTROLLER_LOG, src_dir_fd=user_fd, dst_dir_fd=job_fd)
        finally:
            os.close(job_fd)


LOCAL_CONTROLLER = "prove_jobs.local_controller"


class SubmititLocalPatch:
    """Where the local executor reaches into submitit's private API (see the module's docstring for the others).

    ``submitit.local.local.start_controller`` starts the controller with ``subprocess.Popen`` from
    its module's global ``subprocess``, with no way to pass ``start_new_session``; for the duration
    of one submission we swap that global for a namespace whose ``Popen`` detaches, and runs
    :mod:`prove_jobs.local_controller` (a subclass of submitit's ``Controller``) instead of
    ``submitit.local._local``. tests/test_submit.py fails if the modules or the function stop looking like that.
    Both executors' ``_submitit_command_str`` (the job's command line) go through :mod:`prove_jobs.job_entry`.
    """

    MODULE = "submitit.local.local"
    CONTROLLER = "submitit.local._local"

    @staticmethod
    def module() -> Any:
        from submitit.local import local

        return local

    @staticmethod
    def slurm_module() -> Any:
        from submitit.slurm import slurm

        return slurm

    @classmethod
    @contextlib.contextmanager
    def detached(cls, folder: Path) -> Iterator[None]:
        local = cls.module()
        original = local.subprocess
        local.subprocess = types.SimpleNamespace(Popen=functools.partial(_DetachedPopen, job_folder=folder))
        try:
            yield
        finally:
            local.subprocess = original


class DetachedLocalExecutor(SubmititLocalPatch.module().LocalExecutor):  # type: ignore[misc]
    """submitit's LocalExecutor whose jobs survive the submitting command and its terminal.

    Why: submitit starts the local controller in the caller's session, so closing the
    terminal (SIGHUP) or Ctrl-C in ``submit --wait`` kills every training. A new session
    keeps them apart; ``prove-jobs cancel`` signals the session's process group instead.
    """

    def _submit_command(self, command: str) -> Any:
        with SubmititLocalPatch.detached(Path(self.folder)):
            return super()._submit_command(command)

    @property
    def _submitit_command_str(self) -> str:
        return job_command(self.python, Path(self.folder))


class CheckedSlurmExecutor(SubmititLocalPatch.slurm_module().SlurmExecutor):  # type: ignore[misc]
    """submitit's SlurmExecutor whose jobs check their pickle before loading it (:mod:`prove_jobs.job_entry`)."""

    @property
    def _submitit_command_str(self) -> str:
        return job_command(self.python, Path(self.folder))


def job_command(python: str, folder: Path) -> str:
    """What a job runs: submitit's ``{python} -u -m submitit.core._submit FOLDER`` (submitit 1.5's
    ``_submitit_command_str``), through :mod:`prove_jobs.job_entry`, which checks the pickle first."""
    import shlex

    return " ".join([python, f"-u -m {JOB_ENTRY}", shlex.quote(str(folder))])


JOB_ENTRY = "prove_jobs.job_entry"
