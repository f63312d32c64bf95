"""Text from scripts, API callers and files, made safe to print on an operator's terminal.

A script's output, a URL it printed, or a field declared through the API may hold escape sequences
(recolour, move the cursor, set the window title) or a carriage return that draws a forged table
row over a real one. Text views escape them (`\\x1b`, `\\u202e`) so what is shown is what is stored;
JSON views need nothing, their encoder already escapes.
"""

from __future__ import annotations

import re
import unicodedata

# C0, DEL and C1 controls, plus the format and separator characters that reorder or break lines
# (bidi overrides, U+2028/U+2029). Other non-printable characters, such as a no-break space, are kept.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_LINE_BREAK = re.compile(r"(\n)")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def has_control(text: str) -> bool:
    """Whether `text` holds a character `printable` would escape."""
    return not text.isprintable() and any(_escaped(ch) for ch in text)


def printable(text: str) -> str:
    """One line of text with every control character escaped (newlines too)."""
    if text.isprintable():  # the common case, answered in C
        return text
    return "".join(_escape(ch) if _escaped(ch) else ch for ch in text)


def printable_lines(text: str) -> str:
    """Multi-line text (a script's output tail) with control characters escaped except the line breaks."""
    return "".join(part if part == "\n" else printable(part) for part in _LINE_BREAK.split(text))


def _escaped(ch: str) -> bool:
    return unicodedata.category(ch) in _ESCAPED_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
