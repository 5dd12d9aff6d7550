"""One JSON object per line, UTF-8 kept readable.

`ensure_ascii=False` keeps text as text, but leaves U+2028, U+2029 and U+0085 raw, and
those end a line for Python's `str.splitlines` (and for JavaScript before ES2019). A
sampled token can decode to one of them, so they are escaped: every reader sees one
object per line.

NaN and Infinity are not JSON (Python writes them as bare `NaN`, which strict readers
refuse): a non-finite number raises ValueError instead of being written.
"""
from __future__ import annotations

import json

_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dumps(obj) -> str:
    """`obj` as one line of JSON (no trailing newline); ValueError on NaN or Infinity.

        >>> dumps({"score": -1.5, "text": "ok"})
        '{"score": -1.5, "text": "ok"}'
    """
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).translate(_BREAKS)
