"""One listing of a run dir: which of prove-jobs' files and mmengine's folders are there, read once."""

from __future__ import annotations

import os
from pathlib import Path


class Listing:
    """One ``scandir`` of a run dir: which of prove-jobs' files and mmengine's folders are there.

    On NFS or Lustre every system call is a round trip: a file the listing does not show is not opened.
    """

    def __init__(self, run_dir: Path, entries: list[os.DirEntry[str]] | None = None) -> None:
        """``entries``: the run dir's ``scandir`` if this command made it already (``--root``'s discovery)."""
        self.entries: list[os.DirEntry[str]] | None = entries
        if entries is None:
            try:
                self.entries = list(os.scandir(run_dir))
            except OSError:
                self.entries = None  # missing or unreadable: readers look (and say why) themselves
        self.names = frozenset(e.name for e in self.entries) if self.entries is not None else frozenset()

    def may_have(self, name: str) -> bool:
        return self.entries is None or name in self.names


Listings = dict[Path, list[os.DirEntry[str]]]  # run dir -> its scandir, made by --root's discovery
