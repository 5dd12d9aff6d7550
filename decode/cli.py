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


def _load_stage_files(args: argparse.Namespace) -> int:
    """Run each --stage FILE (user-defined clauses) before any recipe is parsed; 1 if one fails."""
    from decode.compiler.plugins import PluginError, load_stages

    try:
        load_stages(*args.stage)
    except PluginError as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    return 0


def _add_stage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", action="append", default=[], metavar="FILE",
                   help="load user-defined stages from this Python file first (repeatable)")


def _show_warnings(text: str, recipe: Recipe, source: str | None) -> None:
    for w in recipe.warnings:
        print(format_error(text, w, label="warning", source=source), file=sys.stderr)


# -- check -------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    status = _load_stage_files(args)
    if status:
        return status
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
    _add_stage_option(p)
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
# -- run ---------------------------------------------------------------------------------

def _prompts(args: argparse.Namespace) -> list:
    if args.prompt_ids is not None:
        try:
            return [[int(x) for x in args.prompt_ids.replace(" ", "").split(",") if x]]
        except ValueError:
            raise SystemExit(_usage_error(f"--prompt-ids takes comma-separated integers, "
                                          f"got {args.prompt_ids!r} (e.g. --prompt-ids 1,2,3)"))
    return [args.prompt]


def _usage_error(msg: str) -> int:
    print(f"decode: {msg}", file=sys.stderr)
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    if _load_stage_files(args):
        return 1
    text, recipe = _load(args.recipe)
    _show_warnings(text, recipe, _source(args.recipe))
    if (args.prompt is None) == (args.prompt_ids is None):
        return _usage_error("give exactly one of --prompt TEXT or --prompt-ids 1,2,3")
    prompts = _prompts(args)
    import decode
    from decode.runtime import ModelError

    try:
        model = decode.load(args.model, device=args.device, dtype=args.dtype)
        stream = _streamer(model, args) if not args.json and _rows(recipe) == 1 else None
        outs = decode.generate(model, recipe, prompts, seed=args.seed, compile=not args.no_compile,
                               on_step=stream)
    except ModelError as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    sink = open(args.out, "a" if args.out else "w", encoding="utf-8") if args.out else None
    try:
        for comp in outs:
            if args.json or sink is not None:
                line = comp.dumps()
                print(line, file=sink or sys.stdout, flush=True)
            if not args.json:
                _show(comp, streamed=stream is not None)
    finally:
        if sink is not None:
            sink.close()
    return 0


def _rows(recipe: Recipe) -> int:
    p = dict(recipe.search.params)
    return int(p.get("return", p.get("n", p.get("k", 1))) or 1)


def _streamer(model, args):
    """Print a single sequence's text as its tokens arrive (decoded so far, diffed)."""
    from rich.console import Console

    console = Console(highlight=False)
    tok = model.tokenizer
    if tok is None:
        return None
    state = {"ids": [], "shown": ""}
    if args.prompt is not None:
        console.print(args.prompt, style="bold", end="")

    def on_step(t, tokens, info=None):
        new = int(tokens[0])
        eos = model.config.eos_ids
        if state.get("done"):
            return
        if new in (eos if isinstance(eos, (list, tuple)) else (eos,)):
            state["done"] = True
            return
        state["ids"].append(new)
        text = tok.decode(state["ids"])
        console.print(text[len(state["shown"]):], end="", soft_wrap=True)
        state["shown"] = text

    return on_step


def _show(comp, streamed: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if streamed:
        console.print()
        seq = comp.sequences[0]
        console.print(f"[dim]finish={seq.finish} score={seq.score:.4f} recipe={comp.recipe} "
                      f"fingerprint={comp.fingerprint}[/dim]")
        return
    table = Table(title=f"{comp.recipe}  [dim]({comp.fingerprint})[/dim]", show_lines=False)
    for col, kw in (("rank", {"justify": "right"}), ("score", {"justify": "right"}),
                    ("finish", {}), ("text" if comp.prompt is not None else "ids", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for i, s in enumerate(comp.sequences, 1):
        body = s.text if comp.prompt is not None else " ".join(map(str, s.ids))
        table.add_row(str(i), f"{s.score:.4f}", s.finish, body)
    if comp.prompt is not None:
        console.print(f"[bold]prompt:[/bold] {comp.prompt}")
    console.print(table)


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="decode prompts with a recipe",
                       description="Decode a prompt with RECIPE (a .dec file or inline text) on a "
                                   "llama checkpoint (default: the bundled demo model).")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--model", default=None, help="HF llama dir, Meta dir or llama2.c .bin")
    p.add_argument("--prompt", default=None, help="prompt text")
    p.add_argument("--prompt-ids", default=None, help="prompt token ids, e.g. 1,2,3")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt on stdout")
    p.add_argument("--out", default=None, help="append JSON lines to this file")
    p.add_argument("--seed", type=int, default=None, help="RNG seed for sampling recipes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16")
    p.add_argument("--no-compile", action="store_true", help="run the step eagerly")
    _add_stage_option(p)
    p.set_defaults(func=cmd_run)


# To add a subcommand (run, bench, viz): write `add_<name>(sub)` that calls
# sub.add_parser(...) and set_defaults(func=cmd_<name>), import torch inside cmd_<name>,
# and append add_<name> below. A handler returns the exit status.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_check,
    add_fmt,
    add_explain,
    add_run,
    # add_bench, add_viz  <- later issues add theirs here
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
