"""The rendered files a job loads, read once and checked against the digests its own pickle carries.

``prove/`` is group-writable (colleagues take over runs), so a member can rename a file of hers
over a colleague's ``config.py`` after submit; mmengine would execute it as that colleague. The job
reads each file once (never through a link, regular files only, up to a ceiling), checks its
sha256 against the one ``submit`` recorded in the job, and mmengine loads those very bytes from a
private copy (:func:`private_copy`): a swap after the check changes nothing that is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from prove_jobs.errors import RunError
from prove_jobs.fsafe import open_dir, owner_and_time, owner_name

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

MAX_RENDERED_BYTES = 4 * 1024 * 1024  # a rendered config or model template is a few KB


class RenderedChanged(RunError):
    """A rendered file is not what the submission wrote: nothing of it is loaded."""


def sha256_text(text: str) -> str:
    """The digest of ``text`` as prove-jobs writes it (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def read_checked(folder: Path, expected: Sequence[tuple[str, str]]) -> dict[str, bytes]:
    """Each (name, sha256) of ``expected`` in ``folder``, read once and checked; one line naming the file (and who
    last changed it) when one is not what was submitted."""
    try:
        dir_fd = open_dir(folder)
    except OSError as exc:
        raise RunError(f"{folder}: cannot open the rendered config's folder ({exc.strerror or exc})") from None
    try:
        files = {}
        for name, digest in expected:
            data, st = _read_regular(dir_fd, folder / name)
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise RenderedChanged(f"{folder / name}: changed since submit (sha256 {actual[:12]}, submitted "
                                      f"{digest[:12]}; {owner_and_time(st)}): not loaded, nothing of it was run")
            files[name] = data
        return files
    finally:
        os.close(dir_fd)


def _read_regular(dir_fd: int, path: Path) -> tuple[bytes, os.stat_result]:
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise RunError(f"{path}: cannot read the rendered file ({exc.strerror or exc}); not loaded") from None
        st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        raise RenderedChanged(f"{path}: a symbolic link (made by {owner_name(st.st_uid)}) where submit wrote a "
                              "file: not loaded, nothing of it was run") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RenderedChanged(f"{path}: not a regular file ({owner_and_time(st)}): not loaded, nothing of it "
                                  "was run")
        chunks, size = [], 0
        while size <= MAX_RENDERED_BYTES and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_RENDERED_BYTES:
            raise RenderedChanged(f"{path}: over {MAX_RENDERED_BYTES // 1024 // 1024} MiB ({owner_and_time(st)}): "
                                  "not what submit wrote; not loaded, nothing of it was run")
        return b"".join(chunks), st
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_copy(files: Mapping[str, bytes]) -> Iterator[Path]:
    """A folder of this process's own (0700, in the node's temp dir) holding exactly ``files``.

    Why a copy and not ``Config.fromstring``: config.py inherits ``./model.py``, which mmengine
    resolves beside the file it loads; a string has no folder. The names are kept, so mmengine
    dumps ``config.py`` into the run's work dir as before.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="prove-config-") as scratch:
        for name, data in files.items():
            fd = os.open(Path(scratch) / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        yield Path(scratch)
