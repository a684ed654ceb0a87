"""``prove-jobs``: parse the arguments, call one library function, print what it returned.

Imports stay inside the commands: ``prove-jobs --help`` loads argparse and little else, and a
``status --json`` never loads rich. ``parser`` has the arguments, ``commands`` the handlers (and
the modules of each family of commands).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from prove_jobs.cli.commands import HANDLERS
from prove_jobs.cli.parser import COMMANDS, EXAMPLES, build_parser
from prove_jobs.errors import ProveJobsError

__all__ = ["COMMANDS", "EXAMPLES", "HANDLERS", "build_parser", "main"]


def _dataclasses_without_inspect() -> None:
    """Import ``dataclasses`` with ``inspect`` loaded on first use.

    ``dataclasses`` imports ``inspect`` at once but only uses it to write a docstring for a class
    that has none (each of ours has one); ``inspect`` and what it pulls in (ast, dis, tokenize)
    were a third of a ``prove-jobs status`` start-up. A stand-in module forwards to the real one
    on first attribute access; it is only ever seen by ``dataclasses`` (importlib's LazyLoader
    does not help: the import statement itself reads ``__spec__`` and loads the module).
    """
    if "dataclasses" in sys.modules or "inspect" in sys.modules:
        return
    import types

    class _Inspect(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            import importlib

            return getattr(importlib.import_module("inspect"), name)

    sys.modules["inspect"] = _Inspect("inspect")
    try:
        import dataclasses  # noqa: F401
    finally:
        del sys.modules["inspect"]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only=next((w for w in words if w in COMMANDS), "")).parse_args(words)
    _dataclasses_without_inspect()  # before the command imports the library (--help never gets here)
    from prove_jobs.terminal import Terminal

    term = Terminal()
    term.log_to_stderr(args.verbose + args.verbose_here)
    try:
        return int(HANDLERS[args.command](args, term) or 0)
    except ProveJobsError as exc:
        term.error(str(exc))
        return 2
    except KeyboardInterrupt:
        term.info("interrupted")
        return 130


