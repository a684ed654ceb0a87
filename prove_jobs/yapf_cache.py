"""yapf's grammar cache, read safely by jobs that start together.

mmengine's ``Config`` imports yapf, which pickles its grammar to ``~/.cache/YAPF/<version>/`` and
regenerates it whenever the installed grammar file is newer than the pickle (after any fresh install).
It renames the new pickle into place before flushing it (yapf 0.40.2, ``grammar.Grammar.dump``), so a
job importing yapf at that moment reads an empty file: ``EOFError: Ran out of input``. Seen on the
first ``make demo`` of a fresh clone, one run of four failed. The writer is done within milliseconds:
the job imports the grammar first, and retries.
"""

from __future__ import annotations

import pickle
import time

ATTEMPTS = 5
PAUSE_S = 0.2
MODULE = "yapf.yapflib.yapf_api"  # what mmengine.config imports; loading it loads the grammar


def load_grammar() -> None:
    """Import yapf's grammar, retrying a pickle read while another process is writing it.

    After the last attempt mmengine's own import raises the error itself. A yapf that cannot be imported is left
    to mmengine.
    """
    import importlib

    for attempt in range(1, ATTEMPTS + 1):
        try:
            importlib.import_module(MODULE)
            return
        except ImportError:
            return
        except (EOFError, pickle.UnpicklingError):
            time.sleep(PAUSE_S * attempt)
