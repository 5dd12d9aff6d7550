"""The `decode` command line: check, fmt, explain (run, bench, viz are added by the
compiler/runtime work; see COMMANDS).

    $ decode check recipes/*.dec
    $ decode explain "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7"

Nothing here imports torch at module level: check/fmt/explain start in well under a second.
A command that needs torch imports it inside its handler.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from decode.dsl import CATALOGUE, RecipeError, format_error, parse, read_recipe
from decode.dsl.ir import Recipe


def _source(arg: str) -> str | None:
    """The file name to show in messages, or None for inline text."""
    return arg if arg.endswith(".dec") and os.path.exists(arg) else None


def _load(arg: str) -> tuple[str, Recipe]:
    """Read and parse one RECIPE argument; errors carry the text for format_error."""
    text = read_recipe(arg)
    return text, parse(text)


def _show_warnings(text: str, recipe: Recipe, source: str | None) -> None:
    for w in recipe.warnings:
        print(format_error(text, w, label="warning", source=source), file=sys.stderr)


# -- check -------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    status = 0
    for arg in args.recipes:
        source = _source(arg)
        try:
            text, recipe = _load(arg)
        except RecipeError as err:
            print(format_error(err.text or "", err, source=source), file=sys.stderr)
            status = 1
            continue
        except OSError as err:
            print(f"decode: cannot read {arg}: {err.strerror or err}", file=sys.stderr)
            status = 1
            continue
        _show_warnings(text, recipe, source)
        print(f"ok  {recipe.fingerprint}  {source or recipe.canonical}")
    return status


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check recipes (exit 0 if all are valid, 1 if not)",
                       description="Check each RECIPE (a .dec file or inline text). Errors go to "
                                   "stderr with a caret under the mistake.")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_check)


# -- fmt ---------------------------------------------------------------------------------

def _header(text: str) -> str:
    """The leading comment block of a recipe file (its citation), kept by --write."""
    lines = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(line + "\n" for line in lines)


def cmd_fmt(args: argparse.Namespace) -> int:
    for arg in args.recipes:
        text, recipe = _load(arg)
        if args.write:
            if _source(arg) is None:
                raise OSError(f"--write needs a .dec file, not inline text: {arg!r}")
            new = _header(text) + recipe.canonical + "\n"
            if new != text:
                with open(arg, "w", encoding="utf-8") as f:
                    f.write(new)
                print(f"rewrote {arg}")
        else:
            print(recipe.canonical)
    return 0


def add_fmt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fmt", help="print the canonical one-line form",
                       description="Print each RECIPE in canonical form. --write rewrites .dec "
                                   "files in place, keeping their leading comment block.")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--write", action="store_true", help="rewrite .dec files in place")
    p.set_defaults(func=cmd_fmt)


# -- explain -----------------------------------------------------------------------------

def _args_text(clause) -> str:
    spec = clause.spec
    return "  ".join(f"{k}={spec.param(k).spell(v)}" for k, v in clause.params) or "-"


def _call_text(kwargs: dict, only_changed: bool) -> str:
    from decode.dsl.reference import NEUTRAL

    always = ("do_sample", "num_beams", "max_new_tokens")
    items = [(k, v) for k, v in kwargs.items()
             if not only_changed or k in always or NEUTRAL.get(k, object()) != v]
    return "generate(\n" + "".join(f"    {k}={v!r},\n" for k, v in items) + ")"


def cmd_explain(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from decode.dsl.reference import HF_VERSION, hf_reference

    text, recipe = _load(args.recipe)
    source = _source(args.recipe)
    _show_warnings(text, recipe, source)
    ref = hf_reference(recipe)
    out = Console(highlight=False, soft_wrap=True)
    if args.hf:
        out.print(Text(_call_text(ref.kwargs, False) if ref.kwargs is not None
                       else f"no transformers {HF_VERSION} equivalent: {ref.reason}"))
        return 0
    table = Table(title=Text(recipe.canonical), title_justify="left")
    for col in ("step", "clause", "kind", "arguments (defaults filled in)", "what it does"):
        table.add_column(col)
    rows = [(str(i), c) for i, c in enumerate(recipe.stages, 1)]
    rows += [("select", recipe.search)] + [("select", c) for c in recipe.modifiers]
    rows += [("loop", c) for c in recipe.canonical_clauses if c.kind in ("limit", "stop", "control")]
    for step, c in rows:
        table.add_row(step, c.name, c.kind, Text(_args_text(c)), Text(c.spec.doc))
    out.print(table)
    out.print(Text(f"selection: {recipe.sampling_reason}"))
    out.print(Text(f"logit stages apply in the order written; at most {recipe.max_new_tokens} new tokens"))
    out.print(Text(f"fingerprint: {recipe.fingerprint}"))
    if ref.kwargs is None:
        out.print(Text(f"transformers {HF_VERSION}: no equivalent generate() call, because {ref.reason}"))
    else:
        out.print(Text(f"transformers {HF_VERSION} equivalent (everything else switched off; "
                       f"--hf prints every kwarg):"))
        out.print(Text(_call_text(ref.kwargs, True)))
        for note in ref.notes:
            out.print(Text(f"note: {note}"))
    return 0


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show the stages in order, the selection mode and the "
                                       "transformers equivalent")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--hf", action="store_true",
                   help="print only the equivalent transformers generate(...) call")
    p.set_defaults(func=cmd_explain)


# -- the command table -------------------------------------------------------------------
# To add a subcommand (run, bench, viz): write `add_<name>(sub)` that calls
# sub.add_parser(...) and set_defaults(func=cmd_<name>), import torch inside cmd_<name>,
# and append add_<name> below. A handler returns the exit status.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_check,
    add_fmt,
    add_explain,
    # add_run, add_bench, add_viz  <- compiler/runtime issues add theirs here
]


def _catalogue_help() -> str:
    width = max(len(s.usage()) for s in CATALOGUE.values())
    lines = ["clauses (see docs/language.md):"]
    lines += [f"  {s.usage():<{width}}  {s.doc}" for s in CATALOGUE.values()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decode", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A declarative decoding language for llama-family models. RECIPE is a .dec "
                    "file or inline text, e.g. \"beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7\".",
        epilog=_catalogue_help())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 bad recipe or file, 2 bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except RecipeError as err:
        print(format_error(err.text or "", err, source=_source(getattr(args, "recipe", "") or "")),
              file=sys.stderr)
        return 1
    except OSError as err:
        print(f"decode: {err.strerror or err}{': ' + str(err.filename) if err.filename else ''}",
              file=sys.stderr)
        return 1
