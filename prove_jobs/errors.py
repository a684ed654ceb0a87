"""The one exception hierarchy. Every message is one line a user can act on."""

from __future__ import annotations


class ProveJobsError(Exception):
    """Root of every error prove-jobs raises on purpose; the CLI prints it and exits 2."""


class SpecError(ProveJobsError):
    """A sweep file, variant or model template is missing, malformed or inconsistent."""

    def __init__(self, path: object, field: str | None, problem: str) -> None:
        where = f"{path}: {field}" if field else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class RunError(ProveJobsError):
    """A run directory cannot be used as asked (finished already, unwritable, unreadable metadata)."""


class CorruptMetadata(RunError):
    """A run's ``prove_run.json`` is empty, truncated or not prove-jobs metadata."""


class ClaimMoved(RunError):
    """A job's claim on its run was taken over, released or replaced: the job must write nothing."""


class LockConflict(ProveJobsError):
    """Someone else holds the run."""


class SchedulerUnavailable(ProveJobsError):
    """The scheduler command is missing, timed out or failed; ``stderr``: what it said, whole."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class TrainingStackMissing(ProveJobsError):
    """The optional ``train`` extra (torch, mmengine, mmsegmentation) is not installed here."""


class UnreadableValue(CorruptMetadata):
    """A value in a file of the shared root is of the wrong type or out of range: the file (for a log,
    the value) is not used, and this one line says which field of which file, and why."""

    def __init__(self, field: str, path: object, why: str) -> None:
        super().__init__(f"unreadable: {field} in {path} ({why})")
        self.field = field
        self.path = path
        self.why = why
