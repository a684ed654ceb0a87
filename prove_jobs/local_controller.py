"""submitit's local controller (``python -m prove_jobs.local_controller FOLDER``), writing its job's files
without following links.

submitit's own (``submitit.local._local``) makes a folder literally named ``%j`` beside the job's
and opens the task logs by name; this one opens ``<user>/<pid>/`` from the user's folder (checked as
at submit) and each log ``O_NOFOLLOW``: a link planted there, whoever made it, is written through by nobody.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from submitit.core import utils
from submitit.local.local import Controller

from prove_jobs.jobdir import open_job_dir, open_user_folder

_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class NoFollowController(Controller):
    """submitit's ``Controller`` whose ``start_tasks`` opens the task logs without following links."""

    def start_tasks(self) -> None:
        paths = [utils.JobPaths(self.folder, self.pid, k) for k in range(self.ntasks)]
        user_fd = open_user_folder(utils.JobPaths.get_first_id_independent_folder(self.folder))
        try:
            job_fd = open_job_dir(user_fd, self.pid)
        finally:
            os.close(user_fd)
        try:
            self.stdouts = [_append(job_fd, p.stdout.name) for p in paths]
            self.stderrs = self.stdouts if self.stderr_to_stdout else [_append(job_fd, p.stderr.name) for p in paths]
        finally:
            os.close(job_fd)
        for k in range(self.ntasks):  # as submitit 1.5's Controller.start_tasks
            env = dict(os.environ)
            env.update(SUBMITIT_LOCAL_LOCALID=str(k), SUBMITIT_LOCAL_GLOBALID=str(k), SUBMITIT_LOCAL_JOB_ID=self.pid)
            self.tasks.append(subprocess.Popen(self.command, shell=False, env=env, stderr=self.stderrs[k],
                                               stdout=self.stdouts[k], encoding="utf-8"))


def _append(dir_fd: int, name: str) -> Any:
    return os.fdopen(os.open(name, _APPEND, 0o666, dir_fd=dir_fd), "a")


if __name__ == "__main__":
    NoFollowController(Path(sys.argv[1])).run()
