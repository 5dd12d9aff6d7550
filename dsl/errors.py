"""Errors and warnings about recipes, and how to show them to a person.

    >>> try:
    ...     parse("beam 4 | topq 0.9")
    ... except RecipeError as err:
    ...     print(format_error("beam 4 | topq 0.9", err))
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class RecipeError(ValueError):
    """A mistake in a recipe: what is wrong (and what would be right), and where.

    `span` has `.start`/`.end` character offsets into the recipe text; `suggestion`
    is the likely intended spelling (a "did you mean"), or None; `text` is the recipe
    text when the error came from `parse`.
    """

    def __init__(self, message: str, span: Any, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.suggestion = suggestion
        self.text: str | None = None

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        return f"{self.message}{hint} at {self.span.start}..{self.span.end}"


@dataclass(frozen=True)
class RecipeWarning:
    """Something legal but probably not what was meant."""

    message: str
    span: Any

    def __str__(self) -> str:
        return self.message


_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_problem(text: str) -> tuple[int, str] | None:
    """(position, message) of the first character of `text` that is not valid Unicode, or None.

    Python keeps undecodable bytes (argv, `errors="surrogateescape"`) and JSON keeps `\\ud800`
    as lone surrogates, which cannot be encoded, tokenized or written back.

        >>> unicode_problem("ab\\udcff")
        (2, 'not valid Unicode at position 2: byte 0xff is not UTF-8 text; use UTF-8')
    """
    m = _SURROGATE.search(text)
    if m is None:
        return None
    code, at = ord(m.group()), m.start()
    if 0xDC80 <= code <= 0xDCFF:  # what surrogateescape made of an undecodable byte
        return at, (f"not valid Unicode at position {at}: byte 0x{code - 0xDC00:02x} is not UTF-8 "
                    "text; use UTF-8")
    return at, (f"not valid Unicode at position {at}: \\u{code:04x} is a lone surrogate (half of a "
                "UTF-16 pair); write the character itself")


def printable(text: str) -> str:
    """`text` with each lone surrogate shown as U+FFFD, one character for one (carets stay aligned)."""
    return _SURROGATE.sub("\ufffd", text)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def format_error(text: str, err: Any, *, label: str = "error", source: str | None = None) -> str:
    """The source line, a caret line under the span, the message and a "did you mean".

        >>> print(format_error("topq 0.9", err))
        error: unknown clause 'topq'
          1 | topq 0.9
            | ^^^^
          did you mean 'topp'?
    """
    start = max(0, min(err.span.start, len(text)))
    end = max(start, min(err.span.end, len(text)))
    line_no, col = line_col(text, start)
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    line_end = len(text) if line_end == -1 else line_end
    source_line = printable(text[line_start:line_end].expandtabs(1))
    width = max(1, min(end, line_end) - start)
    gutter = f"  {line_no} | "
    where = f"{printable(source)}:{line_no}:{col}: " if source else ""
    out = [f"{where}{label}: {err.message}",
           gutter + source_line,
           " " * (len(gutter) - 2) + "| " + " " * (col - 1) + "^" * width]
    suggestion = getattr(err, "suggestion", None)
    if suggestion:
        out.append(f"  did you mean {suggestion!r}?")
    return "\n".join(out)
