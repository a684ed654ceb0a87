"""The shared weight cache: each checkpoint fetched once, on the login node, and checked wherever it is read.

The cache is a folder a whole group writes: it is sticky (a colleague can add a file, never rename or
replace yours), every write goes through :mod:`prove_jobs.fsafe`'s link-safe folder descriptors, and a
file is published by ``link()`` (never over an existing one) only once it is whole and matches the sha256
prefix its name carries (torch.hub's rule: ``mit_b3_20220624-13b1141c.pth`` starts with ``13b1141c``).
The job checks each file against the whole sha256 its submitter recorded (docs/weights.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.fsafe import LinkRefused, make_dirs, open_dir, owner_and_time
from prove_jobs.weights import Checkpoint, WeightsError

CACHE_MODE = 0o3775  # setgid (the group's files) + sticky (nobody renames or replaces another's file)
FILE_MODE = 0o644
TIMEOUT_S = 60.0  # per connection attempt and per read: a server that stops sending fails, it does not hang
CHUNK = 1 << 20

Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes so far, Content-Length or None)


@dataclass(frozen=True)
class Fetched:
    """One checkpoint of a sweep, made ready (or, on a dry run, looked at).

    ``state``: ``verified`` (in the cache, its hash checked), ``fetched``, ``local`` (a file the template
    names), ``cached`` and ``would fetch`` (dry run: not hashed, nothing fetched), ``from scratch``.
    ``sha256``: the whole file's (what the job checks); "" when not read.
    """

    checkpoint: Checkpoint | None
    state: str
    models: tuple[str, ...]
    size: int | None = None
    sha256: str = ""


def open_cache(cache: Path, umask: int) -> int:
    """A descriptor on the cache folder, made (sticky, group-shared, under ``umask``) when missing."""
    try:
        return open_dir(cache)
    except FileNotFoundError:
        pass
    except LinkRefused:
        raise
    except OSError as exc:
        raise WeightsError(f"{cache}: the weight cache cannot be opened ({exc.strerror or exc})") from None
    old = os.umask(umask)
    try:
        make_dirs(cache.parent)
        parent = open_dir(cache.parent)
        try:
            try:
                os.mkdir(cache.name, 0o700, dir_fd=parent)
                made = True
            except FileExistsError:  # a colleague made it meanwhile
                made = False
            fd = os.open(cache.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(parent)
        if made:
            os.fchmod(fd, CACHE_MODE & ~umask)
        return fd
    except OSError as exc:
        raise WeightsError(f"{cache}: the weight cache cannot be made ({exc.strerror or exc})") from None
    finally:
        os.umask(old)


def _open_regular(name: str | Path, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """A regular file opened for reading, never through a link; O_NONBLOCK: a planted FIFO does not hang us."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(0, "not a regular file")
    return fd, st


def _hash_fd(fd: int) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: Path) -> tuple[str, os.stat_result]:
    """The whole file's sha256 (and its stat), the file opened without following a link."""
    fd, st = _open_regular(path)
    try:
        return _hash_fd(fd)[0], st
    finally:
        os.close(fd)


def _check_cached(dir_fd: int, checkpoint: Checkpoint) -> tuple[str, int] | None:
    """(sha256, size) of the cached file, its name's hash checked; ``None`` when it is not there."""
    path = checkpoint.path
    try:
        fd, st = _open_regular(path.name, dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WeightsError(f"{path}: not a regular file ({exc.strerror or 'a link'}) in the weight cache; prove-jobs "
                           "loads only plain files there: its owner can remove it") from None
    try:
        digest, size = _hash_fd(fd)
    finally:
        os.close(fd)
    if not digest.startswith(checkpoint.hash_prefix):
        raise WeightsError(f"{path}: its sha256 starts {digest[:len(checkpoint.hash_prefix)]}, its name says "
                           f"{checkpoint.hash_prefix} ({owner_and_time(st)}): not loaded; its owner can remove it, "
                           "then `prove-jobs weights SWEEP` fetches it again")
    return digest, size


def _download(url: str, dir_fd: int, path: Path, prefix: str, progress: Progress | None,
              timeout_s: float, hint: str) -> tuple[str, int]:
    """Stream ``url`` into a temp file beside ``path``; publish it as ``path`` only whole and verified.

    ``hint``: what to do when the URL cannot be reached, appended to that error.
    """
    import http.client
    import urllib.error
    import urllib.request

    tmp = f".{path.name}.{os.urandom(6).hex()}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        digest, done = hashlib.sha256(), 0
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "prove-jobs"})
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if progress is not None:
                    progress(path.name, 0, total)
                while chunk := response.read(CHUNK):
                    _write(fd, chunk, path)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(path.name, done, total)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # OSError: ssl, socket, timeout
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(f"{url}: cannot fetch ({type(exc).__name__}: {reason}): {hint}") from None
        if total is not None and done != total:
            raise WeightsError(f"{url}: the server sent {done:,} of {total:,} bytes and closed the connection; "
                               "nothing kept")
        sha = digest.hexdigest()
        if not sha.startswith(prefix):
            raise WeightsError(f"{url}: the file's sha256 starts {sha[:len(prefix)]}, its name says {prefix}: "
                               "refused, nothing kept (a corrupt download, or another file under that name)")
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:  # a colleague's fetch finished first: hers is used, once it is verified
            cached = _check_cached(dir_fd, Checkpoint(url, url, path, prefix))
            if cached is None:
                raise WeightsError(f"{path}: appeared and vanished while it was fetched; try again") from None
            return cached
        return sha, done
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)


def _write(fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:  # the cache's disk (full, read-only, a quota): not the network
        raise WeightsError(f"{path}: cannot write the fetched file ({exc.strerror or exc}); nothing kept") from None


def _look(checkpoint: Checkpoint) -> tuple[str, int | None]:
    """A dry run's look: is the file there? Nothing is hashed or fetched."""
    try:
        st = os.stat(checkpoint.path, follow_symlinks=False)
    except OSError:
        return ("missing" if checkpoint.local else "would fetch"), None
    return ("local" if checkpoint.local else "cached"), st.st_size


def fetch(checkpoints: Iterable[tuple[str, Checkpoint | None]], *, umask: int, sweep_file: Path,
          dry_run: bool = False, progress: Progress | None = None, timeout_s: float = TIMEOUT_S) -> list[Fetched]:
    """Make each distinct checkpoint of ``(model, checkpoint)`` pairs ready: fetch it once, or verify it.

    A file in the cache is verified (a regular file, its name's hash) and never fetched again, whoever
    fetched it; a local file must be a regular file. ``checkpoint`` ``None``: the model trains from
    scratch. Every failure is one line naming the URL or the file; a fetch that fails keeps nothing.
    """
    models: dict[Checkpoint | None, list[str]] = {}
    for model, checkpoint in checkpoints:
        if model not in models.setdefault(checkpoint, []):
            models[checkpoint].append(model)
    done: list[Fetched] = []
    for checkpoint, names in models.items():
        if checkpoint is None:
            done.append(Fetched(None, "from scratch", tuple(names)))
        elif dry_run:
            state, size = _look(checkpoint)
            done.append(Fetched(checkpoint, state, tuple(names), size))
        elif checkpoint.local:
            done.append(_local(checkpoint, tuple(names)))
        else:
            done.append(_cached_or_fetched(checkpoint, tuple(names), umask, sweep_file, progress, timeout_s))
    return done


def _local(checkpoint: Checkpoint, models: tuple[str, ...]) -> Fetched:
    try:
        sha, st = file_sha256(checkpoint.path)
    except OSError as exc:
        raise WeightsError(f"{checkpoint.path}: the checkpoint {checkpoint.source!r} names cannot be read "
                           f"({exc.strerror or exc})") from None
    if not sha.startswith(checkpoint.hash_prefix):
        raise WeightsError(f"{checkpoint.path}: its sha256 starts {sha[:len(checkpoint.hash_prefix)]}, its name says "
                           f"{checkpoint.hash_prefix} ({owner_and_time(st)}): not loaded")
    return Fetched(checkpoint, "local", models, st.st_size, sha)


def _cached_or_fetched(checkpoint: Checkpoint, models: tuple[str, ...], umask: int, sweep_file: Path,
                       progress: Progress | None, timeout_s: float) -> Fetched:
    assert checkpoint.url is not None
    dir_fd = open_cache(checkpoint.path.parent, umask)
    try:
        cached = _check_cached(dir_fd, checkpoint)
        if cached is not None:
            return Fetched(checkpoint, "verified", models, cached[1], cached[0])
        hint = (f"run `prove-jobs weights {sweep_file}` on a machine that reaches it, or put the file at "
                f"{checkpoint.path}")
        try:
            sha, size = _download(checkpoint.url, dir_fd, checkpoint.path, checkpoint.hash_prefix, progress,
                                  timeout_s, hint)
        except OSError as exc:  # the temp file, fsync, link: the cache's disk
            raise WeightsError(f"{checkpoint.path}: cannot write the fetched file ({exc.strerror or exc}); "
                               "nothing kept") from None
        return Fetched(checkpoint, "fetched", models, size, sha)
    finally:
        os.close(dir_fd)


# --- in the job -------------------------------------------------------------------------------------------


def check_unchanged(files: Sequence[tuple[str, str]]) -> None:
    """Before anything is loaded: each (path, sha256) the submitter recorded is still that file, whole."""
    for path, expected in files:
        try:
            actual, st = file_sha256(Path(path))
        except OSError as exc:
            raise WeightsError(f"{path}: the pretrained checkpoint cannot be read ({exc.strerror or exc}); "
                               "not loaded") from None
        if actual != expected:
            raise WeightsError(f"{path}: changed since submit (sha256 {actual[:12]}, submitted {expected[:12]}; "
                               f"{owner_and_time(st)}): not loaded")
