"""Jobs that start together after a fresh install: one reads yapf's grammar pickle while another is writing it.

Reproduced exactly: the pickle in place but still empty (renamed before it was flushed), its bytes arriving
0.4 s later. A bare import fails as the demo's job did; the payload's import waits and succeeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("yapf_third_party", reason="yapf comes with mmengine (the train extra)")


def _python(code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_a_grammar_pickle_still_being_written_is_waited_for(tmp_path: Path) -> None:
    made = _python("import yapf.yapflib.yapf_api", tmp_path / "whole")
    assert made.returncode == 0, made.stderr
    [grammar] = (tmp_path / "whole").rglob("Grammar-*.pickle")
    racing = tmp_path / "racing" / grammar.relative_to(tmp_path / "whole")
    racing.parent.mkdir(parents=True)
    for pickle in grammar.parent.iterdir():
        (racing.parent / pickle.name).write_bytes(pickle.read_bytes())
    racing.write_bytes(b"")  # renamed into place, not yet flushed

    bare = _python("import yapf.yapflib.yapf_api", tmp_path / "racing")
    assert bare.returncode != 0 and "EOFError: Ran out of input" in bare.stderr  # what the demo's job died of

    def flush_later() -> None:
        time.sleep(0.4)
        racing.write_bytes(grammar.read_bytes())

    writer = threading.Thread(target=flush_later)
    writer.start()
    try:
        loaded = _python("from prove_jobs.yapf_cache import load_grammar; load_grammar(); "
                         "from mmengine.config import Config; print('loaded')", tmp_path / "racing")
    finally:
        writer.join()
    assert loaded.returncode == 0 and loaded.stdout.strip() == "loaded", loaded.stderr[-2000:]
