"""Text from the shared data root made harmless where it is shown: on a terminal, and in report.md.

Anyone in the group can name a model folder, or write a user, a job id or an error into a run's
``prove_run.json``. Printed raw, an escape sequence in such a name recolours or clears the reader's
terminal, rewrites what is already on screen (``\\r``, ``\\b``, cursor moves), reorders it (bidi
overrides) or writes their clipboard (OSC 52); in report.md a ``|`` or a newline breaks a table and
``<img onerror=...>`` or ``[x](javascript:...)`` is HTML or a link in whatever renders the file.
"""

from __future__ import annotations

import re

# C0 (but the tab, harmless: rich expands it), DEL, C1 (\x9b alone is a CSI on many terminals), the
# Unicode line and paragraph separators, and the bidi marks, embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_MARKDOWN = re.compile(r"[\\`*\[\]|<>&]")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


_NAMED = {"\n": "\\n", "\r": "\\r"}


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    """``text`` with every control character written out: ESC as ``\\x1b``, a newline as ``\\n``, a bidi
    override as ``\\u202e``. Nothing else changes: a name without one comes back as it was."""
    return _CONTROL.sub(_shown, text) if _CONTROL.search(text) else text


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def markdown(text: str) -> str:
    """``text`` as literal Markdown, for a table cell or running text alike: controls written out as
    :func:`visible` does (so a newline cannot end a table row), ``< > &`` as HTML entities (no tag, no
    entity of its own), and backslash, backtick, ``*``, ``[``, ``]`` and ``|`` escaped with a backslash
    (no code span, emphasis, link or image, no extra cell). Underscores are left alone: GitHub's Markdown
    takes one inside a word (``segformer_mit-b3``) literally, and a whole name in ``_..._`` is at worst
    shown in italics."""
    text = visible(text)
    return _MARKDOWN.sub(lambda m: _ENTITIES.get(m.group()) or "\\" + m.group(), text)
