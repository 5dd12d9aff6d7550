"""One JSON object per line, UTF-8 kept readable.

`ensure_ascii=False` keeps text as text, but leaves U+2028, U+2029 and U+0085 raw, and
those end a line for Python's `str.splitlines` (and for JavaScript before ES2019). A
sampled token can decode to one of them, so they are escaped: every reader sees one
object per line.
"""
from __future__ import annotations

import json

_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dumps(obj) -> str:
    """`obj` as one line of JSON (no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False).translate(_BREAKS)
