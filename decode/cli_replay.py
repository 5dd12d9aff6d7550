"""`decode replay RESULTS`: re-run every line of a results file and say, per line, whether the
same tokens come back (the work is in replay/; this is the command line around it).

    $ decode replay out.jsonl            # a table; exit 1 if a line differs
    $ decode replay out.jsonl --json     # one object per line (format: README)
"""
from __future__ import annotations

import argparse
import sys

EXIT = {"identical": 0, "different": 1, "not reproducible here": 3}


def cmd_replay(args: argparse.Namespace) -> int:
    from decode import jsonl
    from decode.cli import _compile_status, _load_stage_files
    from decode.replay.rerun import DIFFERENT, ELSEWHERE, Models, replay
    from decode.report.read import ReportError, numbered_results

    if _load_stage_files(args):
        return 1
    try:
        lines, torn = numbered_results(args.results)
    except ReportError as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    if torn is not None:
        print(f"decode: warning: {args.results}:{torn}: the last line is cut short; replaying the lines "
              "before it", file=sys.stderr)
    models, found = Models(args.model), []
    with _compile_status():
        for n, obj in lines:
            v = replay(obj, n, models)
            found.append(v)
            if args.json:
                print(jsonl.dumps(v.to_json()), flush=True)
    if not args.json:
        _show(found, args.results)
    verdicts = {v.verdict for v in found}
    return EXIT[DIFFERENT] if DIFFERENT in verdicts else EXIT[ELSEWHERE] if ELSEWHERE in verdicts else 0


def _show(found: list, path: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    style = {"identical": "green", "different": "bold red", "not reproducible here": "yellow"}
    table = Table(title=f"replay of {path}", title_justify="left")
    for col in ("line", "id", "recipe", "verdict", "why", "first differing token (expected -> got)"):
        table.add_column(col, overflow="fold")
    for v in found:
        table.add_row(str(v.line), "" if v.id is None else str(v.id), Text(v.recipe), Text(v.verdict, style=style[v.verdict]),
                      Text(v.why), Text(v.first_text()))
    out = Console(highlight=False)
    (out if out.is_terminal else Console(highlight=False, width=200)).print(table)
    counts = {k: sum(v.verdict == k for v in found) for k in style}
    print(f"decode: {len(found)} lines: " + ", ".join(f"{c} {k}" for k, c in counts.items() if c), file=sys.stderr)


def add_replay(sub: argparse._SubParsersAction) -> None:
    from decode.cli import _add_stage_option

    p = sub.add_parser("replay", help="re-run each line of a results file and say whether the same tokens come back",
                       description="Re-run every line of RESULTS (`decode run --out` or --json lines, a sweep's "
                                   "included) with the recipe, prompt ids, seeds and settings it records, on the "
                                   "model, device and dtype its provenance names, and say per line: identical; "
                                   "different (with the first differing token); or not reproducible here (another "
                                   "model hash, or a device this machine lacks). Exit 0 when every line is "
                                   "identical, 1 when one differs, 3 when none differs but some cannot be "
                                   "reproduced here.")
    p.add_argument("results", metavar="RESULTS.jsonl")
    p.add_argument("--model", default=None,
                   help="load this checkpoint instead of the one the lines name (it must hash the same)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (format: README)")
    _add_stage_option(p)
    p.set_defaults(func=cmd_replay)
