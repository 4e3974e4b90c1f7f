"""Text that came from a device, made safe to keep and to show.

A board is not trusted: what it says (its errors and log tails, its probe facts, the
strings of its results) may hold terminal escape sequences (``ESC[2J`` clears the
screen, an OSC sequence retitles the window), bidirectional overrides, lone surrogates
that no terminal can encode, or be megabytes long. Each such text passes through
:func:`contained` where it enters edgeflow (:mod:`tasks.benchmark` for results,
:mod:`tasks.farm.protocol` for probes, :mod:`tasks.farm.probe` for ``farm probe``), so
that every printer and renderer after it gets one line of visible characters of bounded
length:

- control, format and separator characters are written as their escapes (``\\x1b``,
  ``\\u202e``): visible, so nothing a board sent is hidden, and inert;
- a text longer than its limit is cut, and says how long it was; where the caller has a
  place for it (a result's error), the whole text is written to a file that the cut
  text names.

What a renderer's own syntax makes special (Markdown's ``|``, HTML's ``<``) is the
renderer's to escape (:func:`tasks.select.report.markdown.markdown_text`).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

# Facts and result fields: a version, a CPU model, a precision fit in far less.
FIELD_LIMIT = 200
# Reasons shown in tables and the report; the whole text goes to a file beside the result.
ERROR_LIMIT = 500
# Cc: C0/C1 controls (ESC, BEL, CR), Cf: format (bidi overrides, zero-width), Cs: lone
# surrogates (not encodable: a print would raise), Zl/Zp: line and paragraph separators.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
LINE_BREAKS = frozenset("\n\t")


def _escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, keep_lines: bool = False) -> str:
    """``text`` with every control, format and separator character written as its escape
    (ESC becomes the four characters ``\\x1b``). A newline or tab becomes a space, so the
    text is one line; ``keep_lines`` keeps them (for a file a person reads)."""
    return "".join(
        (character if keep_lines else " ") if character in LINE_BREAKS
        else _escape(character) if unicodedata.category(character) in HIDDEN_CATEGORIES
        else character
        for character in text)


def contained(text: str, limit: int = FIELD_LIMIT, overflow: Path | None = None,
              shown_as: str | None = None) -> str:
    """``text`` made :func:`visible` and at most ``limit`` characters, then, when it was
    cut, ``"… (N chars)"`` with N the length of ``text``. With ``overflow``, a cut text's
    whole (visible, lines kept) is written to that file, and the note names it
    (as ``shown_as``, default the path): ``"… (N chars, full text in FILE)"``."""
    shown = visible(text)
    if len(shown) <= limit:
        return shown
    where = ""
    if overflow is not None:
        overflow.write_text(visible(text, keep_lines=True) + "\n", encoding="utf-8")
        where = f", full text in {shown_as or overflow}"
    return f"{shown[:limit]}… ({len(text)} chars{where})"


def contained_strings(document: Any, limit: int = FIELD_LIMIT) -> Any:
    """A copy of a JSON document from a device with every string (keys too) through
    :func:`contained`; numbers, booleans and nulls as they are."""
    if isinstance(document, str):
        return contained(document, limit)
    if isinstance(document, dict):
        return {contained(str(key), limit): contained_strings(value, limit)
                for key, value in document.items()}
    if isinstance(document, list):
        return [contained_strings(item, limit) for item in document]
    return document
