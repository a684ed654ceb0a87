"""What ``prove-jobs -v`` and ``-vv`` print: through :mod:`logging`, which costs nothing when nobody listens.

The CLI imports logging only for ``-v``; a command without it never loads the module, and a
message to a logging that was never imported has no handler to reach, so it is dropped unbuilt.
"""

from __future__ import annotations

import sys

SCHEDULER = "prove_jobs.scheduler"  # -v: every scheduler command, with its duration
LOGS = "prove_jobs.logs"  # -vv: every log file read, from where, how


def say(channel: str, level: int, message: str, *args: object) -> None:
    """Log ``message % args`` on ``channel`` at ``level`` (logging.INFO, DEBUG) if logging is in use."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(channel).log(level, message, *args)


INFO, DEBUG = 20, 10  # logging's own numbers, without importing it
