"""What a job runs on the node (``python -u -m prove_jobs.job_entry FOLDER``): submitit's own job entry,
with the job's pickle checked before it is loaded.

The pickle lies below the shared data root, whose folders the group can write: a member could rename
``.prove-jobs`` (or a folder below it) away and put her own pickle where a queued job of yours will
look for it. Unpickling runs code, so the job loads its pickle only from a plain file that its own
user owns, that no one else may write and that has no other name (a hard link), opened without
following a link, and unpickles exactly the bytes it checked (no second open by name).
"""

from __future__ import annotations

import os
import pickle
import stat
import sys
from pathlib import Path
from typing import Any

from prove_jobs.errors import RunError

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def load_checked(path: Path) -> Any:
    """The object pickled in ``path``, only if this user wrote it; else ``RunError`` naming the file and why."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise RunError(f"{path}: cannot open the job's pickle ({exc.strerror}; a link is not followed)") from None
    try:
        st = os.fstat(fd)
        problem = _untrusted(st)
        if problem:
            from prove_jobs.fsafe import owner_name

            raise RunError(f"{path}: {problem} (owner {owner_name(st.st_uid)}): not loaded; a job loads only the "
                           "pickle its own user submitted")
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read()
    finally:
        os.close(fd)
    return pickle.loads(data)


def _untrusted(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a plain file"
    if st.st_uid != os.geteuid():
        return "not written by this job's user"
    if st.st_mode & 0o022:
        return "writable by others"
    if st.st_nlink != 1:
        return f"{st.st_nlink} names (a hard link)"
    return None


def dump_private(obj: Any, filepath: str | Path) -> None:
    """Write a job's pickle as no one else may write it, whatever the umask (the job runs under the sweep's,
    group-writable: 0002). submitit re-pickles a checkpointed job before it requeues, to a temporary name it
    then renames: with the umask's 0664, a member could write into it, and the next start would refuse it."""
    import cloudpickle

    fd = os.open(filepath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as handle:
        os.fchmod(fd, 0o600)  # (a file that was there keeps its mode through O_CREAT)
        cloudpickle.dump(obj, handle, pickle.HIGHEST_PROTOCOL)


def main() -> None:
    from submitit.core import submission, utils

    def load(cls: type[Any], filepath: str | Path) -> Any:
        found = load_checked(Path(filepath))
        if not isinstance(found, cls):
            raise RunError(f"{filepath}: not a submitit job ({type(found).__name__}): not run")
        return found

    # submitit 1.5's process_job loads the job through DelayedSubmission.load (its only unpickling on the node),
    # and a checkpointed job is written again through DelayedSubmission.dump; tests/test_job_entry.py fails if
    # either stops being so
    utils.DelayedSubmission.load = classmethod(load)  # type: ignore[method-assign,assignment]
    utils.DelayedSubmission.dump = dump_private  # type: ignore[method-assign,assignment]
    sys.argv = [sys.argv[0], sys.argv[-1]]  # submitit_main's one argument: the job's folder
    submission.submitit_main()


if __name__ == "__main__":
    main()
