"""Reading a results file for the report: `decode run --json`/`--out` lines, a sweep's included.

    >>> lines, torn = read_results_file("sweep.jsonl")
    >>> numbered, torn = numbered_results("out.jsonl")     # [(line number, object)]
"""
from __future__ import annotations

import json


class ReportError(Exception):
    """A results file the report cannot read: the message names the file, the line and the fix."""


_NEEDS = {"recipe": str, "fingerprint": str, "prompt_ids": list, "sequences": list}


def read_results_file(path: str) -> tuple[list[dict], int | None]:
    """(the result lines, the number of a cut-short last line left out, or None)."""
    lines, torn = numbered_results(path)
    return [obj for _, obj in lines], torn


def numbered_results(path: str) -> tuple[list[tuple[int, dict]], int | None]:
    """([(line number, result object)], the number of a cut-short last line left out, or None)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read().split("\n")
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist: give a results file of `decode run --out` or --json") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    lines, torn = [], None
    for n, text in enumerate(raw, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            if n == len(raw):  # no newline after it: a run stopped while writing it
                torn = n
                continue
            raise ReportError(f"{path}:{n}: not a JSON line; a results file holds one `decode run --json` "
                              "object per line") from None
        missing = [k for k, kind in _NEEDS.items() if not isinstance(obj, dict) or not isinstance(obj.get(k), kind)]
        if missing:
            raise ReportError(f"{path}:{n}: not a result line (no {missing[0]!r}); give a file written by "
                              "`decode run --out` or --json")
        lines.append((n, obj))
    if not lines:
        raise ReportError(f"{path} holds no result lines: run `decode run RECIPE --out {path}` first")
    return lines, torn
