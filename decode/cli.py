"""The `decode` command line: check, fmt, explain (run, bench, viz are added by the
compiler/runtime work; see COMMANDS).

    $ decode check recipes/*.dec
    $ decode explain "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7"

Nothing here imports torch at module level: check/fmt/explain start in well under a second.
A command that needs torch imports it inside its handler.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import contextlib
import math
import os
import stat
import sys
import tempfile
import warnings
from typing import Callable

from decode.cli_replay import add_replay
from decode.compiler.plugins import PluginError
from decode.dsl import CATALOGUE, RecipeError, format_error, lookup, parse, read_recipe
from decode.dsl.check import folder_of, names_file
from decode.dsl.errors import printable, unicode_problem
from decode.dsl.format import fmt, fmt_file
from decode.dsl.ir import Recipe


def _source(arg: str) -> str | None:
    """The file name to show in messages, or None for inline text."""
    return arg if names_file(arg) and os.path.exists(arg) else None


def _load(arg: str) -> tuple[str, Recipe]:
    """Read and parse one RECIPE argument (a file's paths start from its folder); errors carry
    the text for format_error."""
    text = read_recipe(arg)
    return text, parse(text, folder_of(arg))


def _load_any(arg: str):
    """(text, the recipe or a sweep's first point, the sweep or None) of one RECIPE argument."""
    from decode.dsl.sweep import is_sweep, sweep

    text = read_recipe(arg)
    if is_sweep(text):
        sw = sweep(text, None, folder_of(arg))
        return text, sw.points[0], sw
    return text, parse(text, folder_of(arg)), None


def _load_stage_files(args: argparse.Namespace) -> int:
    """Run each --stage FILE (user-defined clauses) before any recipe is parsed; 1 if one fails."""
    from decode.compiler.plugin_files import load_stages

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
    encode = _model_encode(args.model)
    if isinstance(encode, int):
        return encode
    for arg in args.recipes:
        source = _source(arg)
        try:
            text, recipe, sw = _load_any(arg)
        except RecipeError as err:
            print(format_error(err.text or "", err, source=source), file=sys.stderr)
            status = 1
            continue
        except OSError as err:
            print(f"decode: cannot read {printable(arg)}: {err.strerror or err}", file=sys.stderr)
            status = 1
            continue
        _show_warnings(text, recipe, source)
        refused = _refused(recipe)
        if refused:  # what `run` would refuse before decoding, in its words
            print(f"decode: {printable(source) + ': ' if source else ''}{refused}", file=sys.stderr)
            status = 1
            continue
        if encode is not None:
            from decode.dsl.midtext import midtext_warnings

            for w in midtext_warnings(recipe, encode):
                print(format_error(text, w, label="warning", source=source), file=sys.stderr)
            for err in _unspellable(recipe, encode.model):
                print(format_error(text, err, source=source), file=sys.stderr)
                status = 1
            if status:
                continue
        if sw is not None:
            print(f"ok  sweep of {len(sw.points)} points  {printable(source) if source else sw.canonical}")
            from decode.jobs.sweep import compiled_axes

            for a in compiled_axes(sw):
                print(f"note: {a.label} changes the compiled step: each of its {len(a.values)} values compiles once")
            continue
        print(f"ok  {recipe.fingerprint}  {printable(source) if source else recipe.canonical}")
    return status


def _refused(recipe: Recipe) -> str | None:
    """The refusal `run` gives this recipe before decoding (speculative_run.refuse_stages), or None.
    Only a modifier (draft, lookup) can be refused there: a recipe without one is not lowered,
    so `check` stays free of torch for it."""
    if not recipe.modifiers:
        return None
    from decode.compiler.plan import compile as lower
    from decode.compiler.speculative_run import refuse_stages

    try:
        refuse_stages(lower(recipe))
    except ValueError as err:
        return str(err)
    return None


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check recipes (exit 0 if all are valid, 1 if not)",
                       description="Check each RECIPE (a .dec file or inline text). Errors go to "
                                   "stderr with a caret under the mistake.")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--model", default=None,
                   help="also check the recipe's strings against this model's tokenizer (ban, bias, "
                        "...) and that it can spell each constraint (regex, json, grammar, choice)")
    _add_stage_option(p)
    p.set_defaults(func=cmd_check)


def _model_encode(model: str | None):
    """The tokenizer's encode (as the stages call it) of --model, None without one, or exit status 1."""
    if model is None:
        return None
    import decode
    from decode.runtime import ModelError, require_tokenizer

    try:
        loaded = decode.load(model, device="cpu")
        tokenizer = require_tokenizer(loaded)
    except ModelError as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, bos=False)

    encode.model = loaded  # the constraints' check reads the whole model (vocabulary, EOS ids)
    return encode


def _unspellable(recipe: Recipe, model) -> list[RecipeError]:
    """A RecipeError over each constraint clause this model's tokenizer cannot start."""
    from decode.compiler.constraint import unspellable

    return [RecipeError(why, clause.span) for clause, why in unspellable(recipe, model)]


# -- fmt ---------------------------------------------------------------------------------

def cmd_fmt(args: argparse.Namespace) -> int:
    inline = [a for a in args.recipes if not names_file(a)] if args.write else []
    if inline:  # refused before any file is touched
        return _usage_error(f"--write rewrites .dec files; {inline[0]!r} is recipe text")
    status = 0
    for arg in args.recipes:  # a bad file is named and skipped; the others are still done
        try:
            if args.write:
                _fmt_write(arg)
            else:
                print(fmt(read_recipe(arg), folder_of(arg)))
        except RecipeError as err:
            print(format_error(err.text or "", err, source=_source(arg)), file=sys.stderr)
            status = 1
        except OSError as err:
            verb = "rewrite" if args.write else "read"
            print(f"decode: cannot {verb} {printable(arg)}: {err.strerror or err}", file=sys.stderr)
            status = 1
    return status


def _fmt_write(path: str) -> None:
    """Rewrite one .dec file in canonical form, comments kept; left alone if already canonical."""
    text = read_recipe(path)
    new = fmt_file(text, folder_of(path))
    if new != text:
        _replace_file(path, new)
        print(f"rewrote {printable(path)}")


def _replace_file(path: str, text: str) -> None:
    """Write `text` over `path` atomically: a temporary file beside it, then os.replace, so a
    crash leaves the old file or the new one, never half of one. The mode is kept; a symlink
    is followed (its target is rewritten, the link stays)."""
    target = os.path.realpath(path)
    mode = stat.S_IMODE(os.stat(target).st_mode)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def add_fmt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fmt", help="print the canonical one-line form",
                       description="Print each RECIPE in canonical form. --write rewrites .dec "
                                   "files in place (atomically), keeping every comment; a file "
                                   "that does not parse is named, left as it is, and the others "
                                   "are still rewritten (exit 1).")
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

    status = _load_stage_files(args)
    if status:
        return status
    text, recipe, sw = _load_any(args.recipe)
    source = _source(args.recipe)
    _show_warnings(text, recipe, source)
    encode = _model_encode(args.model)  # real token ids for the strings of ban, bias, ...
    if isinstance(encode, int):
        return encode
    ref = hf_reference(recipe, encode)
    out = Console(highlight=False, soft_wrap=True)
    if args.hf:
        out.print(Text(_call_text(ref.kwargs, False) if ref.kwargs is not None
                       else f"no transformers {HF_VERSION} equivalent: {ref.reason}"))
        for note in ref.notes if ref.kwargs is not None else ():
            out.print(Text(f"# note: {note}"))
        return 0
    table = Table(title=Text(recipe.canonical), title_justify="left")
    for col in ("step", "clause", "kind", "arguments (defaults filled in)", "what it does"):
        table.add_column(col)
    rows = [(str(i), c) for i, c in enumerate(recipe.stages, 1)]
    rows += [("select", recipe.search)] + [("select", c) for c in recipe.modifiers]
    rows += [("loop", c) for c in recipe.loop_clauses]
    for step, c in rows:
        table.add_row(step, c.name, c.kind, Text(_args_text(c)), Text(c.spec.doc))
    out.print(table)
    for c in (recipe.search, *recipe.modifiers, *recipe.stages):  # in plain words, with their numbers
        if c.spec.explain is not None:
            out.print(Text(f"{c.name}: {c.spec.explain(c.param_dict)}"))
    out.print(Text(f"selection: {recipe.sampling_reason}"))
    out.print(Text(f"logit stages apply in the order written; at most {recipe.max_new_tokens} new tokens"))
    out.print(Text(f"fingerprint: {recipe.fingerprint}"))
    if sw is not None:
        from decode.jobs.sweep import compiled_axes

        axes = ", ".join(f"{a.label} in {{{', '.join(map(str, a.values))}}}" for a in sw.axes)
        out.print(Text(f"sweep: {len(sw.points)} points over {axes}; the table shows point 0 ({recipe.canonical})"))
        for a in compiled_axes(sw):
            out.print(Text(f"sweep: {a.label} changes the compiled step: each of its values compiles once"))
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
                   help="print only the equivalent transformers generate(...) call (and its notes)")
    p.add_argument("--model", default=None,
                   help="a checkpoint whose tokenizer turns the recipe's strings into real token ids")
    _add_stage_option(p)
    p.set_defaults(func=cmd_explain)


# -- run ---------------------------------------------------------------------------------

def _usage_error(msg: str) -> int:
    print(f"decode: {msg}", file=sys.stderr)
    return 2


def _whole(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `least` to `most` (argparse then says which flag
    and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least or (most is not None and value > most):
            bound = f"from {least} to {most}" if most is not None else f"of at least {least}"
            raise argparse.ArgumentTypeError(f"takes a whole number {bound}, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"takes a positive number of seconds, got {text!r}")
    return value


def _prompt_ids(text: str) -> list[int] | None:
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        return None
    return ids if ids and min(ids) >= 0 else None


def _check_run_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the run options (checked before the model loads), or None."""
    given = [o for o, v in (("--prompt", args.prompt), ("--prompt-ids", args.prompt_ids),
                            ("--prompts", args.prompts)) if v is not None]
    if len(given) != 1:
        return ("give exactly one of --prompt TEXT, --prompt-ids 1,2,3 or --prompts FILE.jsonl"
                + (f" (got {' and '.join(given)})" if given else ""))
    if args.prompt_ids is not None and _prompt_ids(args.prompt_ids) is None:
        return (f"--prompt-ids takes comma-separated non-negative integers, got "
                f"{args.prompt_ids!r} (e.g. --prompt-ids 1,2,3)")
    if args.prompt == "":
        return "--prompt is empty: give some text to continue"
    bad = unicode_problem(args.prompt or "")  # undecodable bytes in argv arrive as surrogates
    if bad is not None:
        return f"--prompt is {bad[1]}, or give token ids with --prompt-ids"
    if args.prompts is not None and args.trace is not None:
        return "--trace records a single run: use it with --prompt or --prompt-ids, not --prompts"
    if (args.chat or args.system is not None) and args.prompt is None:
        return "--chat and --system apply the model's chat template to --prompt TEXT (the user's message); give --prompt"
    if args.system is not None and not args.chat:
        return "--system is the system message of a chat: add --chat"
    if args.batch_size < 1:
        return f"--batch-size must be at least 1, got {args.batch_size}"
    return None


def _check_device(device: str | None) -> str | None:
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device: use cpu, cuda, cuda:1, mps, ..."
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: this torch build or machine has no CUDA GPU; use --device cpu"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from decode.dsl.check import with_setting
    from decode.dsl.sweep import MAX_POINTS, is_sweep, sweep

    if _load_stage_files(args):
        return 1
    text, base = read_recipe(args.recipe), folder_of(args.recipe)
    sw = sweep(text, None if args.yes else MAX_POINTS, base) if is_sweep(text) else None
    recipe = sw.points[0] if sw is not None else parse(text, base)
    _show_warnings(text, recipe, _source(args.recipe))
    if args.max is not None:  # the run decodes, fingerprints and records the recipe with this max
        recipe = with_setting(recipe, "max_new_tokens", args.max)
        if sw is not None:
            sw = dataclasses.replace(sw, points=tuple(with_setting(p, "max_new_tokens", args.max)
                                                      for p in sw.points))
    problem = _check_run_args(args) or (sw is not None and args.trace is not None
                                        and "--trace records one recipe's run; a sweep runs many: "
                                            "trace one point (write its values in place of the sets)")
    swept_max = [a for a in (sw.axes if sw is not None else ()) if lookup(a.name).setting == "max_new_tokens"]
    if args.max is not None and swept_max:
        problem = problem or (f"--max {args.max} would replace every value the recipe sweeps in "
                              f"'{swept_max[0].label}': drop --max, or write one value there")
    if problem:
        return _usage_error(problem)
    from decode.jobs.batch import BatchError
    from decode.runtime import ModelError

    try:
        problem = _check_device(args.device)
        if problem:
            return _usage_error(problem)
        if sw is not None:
            return _run_sweep(args, sw)
        if args.prompts is not None:
            return _run_batch(args, recipe)
        return _run_single(args, recipe)
    except (ModelError, BatchError, ValueError) as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndecode: interrupted", file=sys.stderr)
        return 130


def _run_single(args: argparse.Namespace, recipe: Recipe) -> int:
    import decode
    from decode.compiler.plan import compile as lower, returns_per_prompt
    from decode.compiler.provenance import seeding, stamp
    from decode.jobs.batch import BatchError, appending, check_single_out, prompt_problem
    from decode.runtime import ModelError
    from decode.traces.record import TraceRecorder, target_problem

    prompt = _prompt_ids(args.prompt_ids) if args.prompt_ids is not None else args.prompt
    # refuse a file the user has before the model loads; nothing is opened for writing till then
    if args.out:
        check_single_out(args.out)
    problem = args.trace and target_problem(args.trace, {"--out": args.out, "--model": args.model})
    if problem:
        raise BatchError(problem)
    out = contextlib.ExitStack()
    sink = out.enter_context(appending(args.out)) if args.out else None
    trace = open(args.trace, "w", encoding="utf-8") if args.trace else None
    try:
        model = decode.load(args.model, device=args.device, dtype=args.dtype)
        _warn_midtext(recipe, model)
        if args.chat:
            prompt = _chat_prompt(model, args.system, prompt)
        problem = prompt_problem(prompt, model)
        if problem:
            raise ModelError(f"--prompt-ids: {problem}")
        if _logprobs_problem(args, model):
            return _usage_error(_logprobs_problem(args, model))
        plan = lower(recipe)
        callbacks = []
        stream = _streamer(model, args) if not args.json and returns_per_prompt(plan) == 1 else None
        if stream is not None:
            callbacks.append(stream)
        seed, seeds = seeding(plan, args.seed, None, 1)  # drawn here when none is given, so the trace has it
        recorder = None
        if trace is not None:
            recorder = TraceRecorder(trace, plan, model, [prompt], provenance=stamp(
                model, not args.no_compile, seed, seeds[0] if seeds else None))
            callbacks.append(recorder)
        with _compile_status():
            outs = decode.generate(model, plan, [prompt], seed=seed, compile=not args.no_compile,
                                   on_step=_both(callbacks), trace=recorder is not None,
                                   logprobs=args.logprobs)
        if recorder is not None:
            recorder.finish(outs)
        for comp in outs:
            if sink is not None:
                sink(comp.dumps() + "\n")
            if args.json:
                print(comp.dumps(), flush=True)
            else:
                _show(comp, streamed=stream is not None)
                _show_logprobs(comp)
    finally:
        out.close()
        if trace is not None:
            trace.close()
    if args.trace and not args.json:
        print(f"trace written to {args.trace}; draw it with `decode viz {args.trace}`", file=sys.stderr)
    return 0


def _warn_midtext(recipe: Recipe, model) -> None:
    """Warn about strings (ban, bias, ...) whose token ids do not occur in running text."""
    from decode.dsl.midtext import midtext_warnings

    if model.tokenizer is not None:
        for w in midtext_warnings(recipe, lambda text: model.tokenizer.encode(text, bos=False)):
            print(format_error(recipe.text, w, label="warning"), file=sys.stderr)


@contextlib.contextmanager
def _compile_status():
    """A spinner with the elapsed seconds on stderr while a graph compiles (its first call),
    saying which: the model's forward (once per model and shape) or the recipe's selection."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from decode.compiler.kernel_cache import watch_compiles

    shown = []

    def watch(starting: bool, what: str) -> None:
        if starting:
            p = Progress(SpinnerColumn(), TextColumn(f"compiling {what}", markup=False),
                         TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            p.add_task("compile", total=None)
            p.start()
            shown.append(p)
        elif shown:
            shown.pop().stop()

    with watch_compiles(watch):
        yield


def _chat_prompt(model, system: str | None, user: str) -> list[int]:
    """The prompt ids of a one-turn chat under the model's chat template."""
    from decode.runtime import require_tokenizer
    from decode.runtime.chat import chat_ids

    messages = ([{"role": "system", "content": system}] if system is not None else [])
    return chat_ids(require_tokenizer(model), messages + [{"role": "user", "content": user}])


def _run_sweep(args: argparse.Namespace, sw) -> int:
    """Every point of a sweep on the prompt(s): one result line per (point, prompt)."""
    import decode
    from decode.jobs import batch
    from decode.jobs.sweep import compiled_axes, run_sweep

    if args.prompts is not None:
        items, bad = batch.read_prompts(args.prompts)
        for e in bad:
            print(f"decode: skipped {e.describe(args.prompts)}", file=sys.stderr)
    else:
        prompt = _prompt_ids(args.prompt_ids) if args.prompt_ids is not None else args.prompt
        items = [batch.Item(1, 0, prompt)]
    done = None
    if args.out and args.prompts is not None:  # a rerun resumes: what the file holds is not decoded again
        from decode.jobs.sweep import read_done

        batch.check_target(args.prompts, args.out)
        done, found = read_done(args.out, sw, args.logprobs)
        batch.cut_torn(args.out, found)
        if done:
            print(f"decode: {args.out} already holds {sum(map(len, done.values()))} of the "
                  f"{len(sw.points) * len(items)} lines; decoding the rest", file=sys.stderr)
    elif args.out:
        batch.check_single_out(args.out)
    axes = " x ".join(f"{a.label} ({len(a.values)})" for a in sw.axes)
    print(f"decode: sweep of {len(sw.points)} points over {axes}", file=sys.stderr)
    for a in compiled_axes(sw):
        print(f"decode: {a.label} changes the compiled step: each of its {len(a.values)} values "
              "compiles once", file=sys.stderr)
    model = decode.load(args.model, device=args.device, dtype=args.dtype)
    if _logprobs_problem(args, model):
        return _usage_error(_logprobs_problem(args, model))
    _warn_midtext(sw.points[0], model)
    lines: list[str] = []
    seed = args.seed if args.seed is not None else (sw.points[0].seed if sw.points[0].seed is not None else 0)
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(batch.appending(args.out)) if args.out else None

        def write(text: str) -> None:
            if sink is not None:
                sink(text)
            if args.json:
                sys.stdout.write(text)
                sys.stdout.flush()
            lines.extend(text.splitlines())

        stack.enter_context(_compile_status())
        errors, steps = run_sweep(sw, model, items, write, seed=seed, batch_size=args.batch_size,
                                  compiled=not args.no_compile, done=done, logprobs=args.logprobs)
    for e in errors:
        print(f"decode: failed {e.describe(args.prompts or '--prompt')}", file=sys.stderr)
    if not args.json:
        _show_sweep(lines)
    how = "compiled step" if not args.no_compile else "eager step"
    print(f"decode: {len(sw.points)} points x {len(items)} prompts; {steps} new {how}"
          f"{'s' if steps != 1 else ''}", file=sys.stderr)
    return 1 if errors else 0


def _show_sweep(lines: list[str]) -> None:
    from decode.compiler.results import Sequence
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows = [json.loads(x) for x in lines]
    table = Table(title="sweep", title_justify="left")
    names = list(rows[0]["point"]["values"]) if rows else []
    for col in ["point", *names, "prompt", "first sequence", "score"]:
        table.add_column(col)
    keys = [f.name for f in dataclasses.fields(Sequence)]
    for r in rows:
        first = Sequence(**{k: r["sequences"][0][k] for k in keys if k in r["sequences"][0]})
        table.add_row(str(r["point"]["index"]), *(str(v) for v in r["point"]["values"].values()), str(r["id"]),
                      Text(_visible(first.text)[:60]), f"{first.score:.3f}")
    Console(highlight=False).print(table)
    if rows:
        from decode.compiler.provenance import footer

        Console(highlight=False).print(Text(footer(rows[0]["provenance"]), style="dim"), soft_wrap=True)


def _both(callbacks: list):
    if not callbacks:
        return None
    if len(callbacks) == 1:
        return callbacks[0]

    def on_step(t, tokens, info=None):
        for cb in callbacks:
            cb(t, tokens, info)

    return on_step


def _streamer(model, args):
    """Print a single sequence's text as its tokens arrive (decoded so far, diffed)."""
    from rich.console import Console

    console = Console(highlight=False)
    tok = model.tokenizer
    if tok is None:
        return None
    state = {"ids": [], "shown": ""}
    eos = set(model.config.eos_ids if isinstance(model.config.eos_ids, (list, tuple))
              else (model.config.eos_ids,))

    def on_step(t, tokens, info=None):
        if state.get("done"):
            return
        if t == 0 and args.prompt is not None:  # now that the engine has taken the prompt
            console.print(args.prompt, style="bold", end="")
        new = int(tokens[0])
        if new in eos:
            state["done"] = True
            return
        state["ids"].append(new)
        text = tok.decode(state["ids"])
        console.print(text[len(state["shown"]):], end="", soft_wrap=True)
        state["shown"] = text

    return on_step


def _visible(text: str) -> str:
    """Sequence text for a table cell: line breaks shown, not taken."""
    return text.replace("\r\n", "↵").replace("\n", "↵").replace("\t", "⇥")


def _show(comp, streamed: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from decode.compiler.provenance import footer

    console = Console(highlight=False)
    if streamed:
        console.print()
        seq = comp.sequences[0]
        console.print(Text(f"finish={seq.finish} score={seq.score:.4f} recipe={comp.recipe} "
                           f"fingerprint={comp.fingerprint}", style="dim"))
        console.print(Text(footer(comp.provenance), style="dim"), soft_wrap=True)
        return
    table = Table(title=Text.assemble(comp.recipe, (f"  ({comp.fingerprint})", "dim")), title_justify="left")
    draws = any(s.draw is not None for s in comp.sequences)  # sample n: best first, each keeps its draw
    incl = any(s.inclusion is not None for s in comp.sequences)  # cpsbs: log inclusion probability
    for col, kw in (("rank", {"justify": "right"}), *((("draw", {"justify": "right"}),) if draws else ()),
                    ("score", {"justify": "right"}), *((("inclusion", {"justify": "right"}),) if incl else ()),
                    ("finish", {}),
                    ("text" if comp.prompt is not None else "ids", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for i, s in enumerate(comp.sequences, 1):
        body = _visible(s.text) if comp.prompt is not None else " ".join(map(str, s.ids))
        table.add_row(str(i), *((str(s.draw),) if draws else ()), f"{s.score:.4f}",
                      *((f"{s.inclusion:.4f}",) if incl else ()), s.finish, Text(body))
    if comp.prompt is not None:
        console.print(Text.assemble(("prompt: ", "bold"), comp.prompt))
    console.print(table)
    console.print(Text(footer(comp.provenance), style="dim"), soft_wrap=True)


def _logprobs_problem(args: argparse.Namespace, model) -> str | None:
    vocab = int(model.config.vocab_size)
    if args.logprobs > vocab:
        return (f"--logprobs {args.logprobs} asks for more alternatives than this model has tokens "
                f"({vocab}); give at most {vocab}")
    return None


def _show_logprobs(comp) -> None:
    """Each sequence's tokens with their log-probs, one table per sequence (`--logprobs N`)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    for i, s in enumerate(comp.sequences, 1):
        if s.logprobs is None:
            return
        table = Table(title=f"log-probs of sequence {i} (raw: the model's; processed: after the stages)",
                      title_justify="left")
        for col in ("#", "token", "raw", "processed", "likeliest (processed)"):
            table.add_column(col, justify="right" if col in ("#", "raw", "processed") else "left")
        for j, t in enumerate(s.logprobs):
            top = "  ".join(f"{_visible(a.text) or a.id!r} {a.logprob:.3f}" for a in t.top_processed)
            table.add_row(str(j), Text(_visible(t.text) or repr(t.id)), _number(t.raw), _number(t.processed), Text(top))
        console.print(table)


def _number(v: float | None) -> str:
    return "-inf" if v is None else f"{v:.4f}"


def _run_batch(args: argparse.Namespace, recipe: Recipe) -> int:
    """--prompts FILE: decode every valid line, write as batches finish, resume on rerun.
    Under torchrun each process decodes a share (see jobs/distributed.py)."""
    import decode
    from decode.compiler.plan import compile as lower
    from decode.jobs import batch, distributed

    world = distributed.World.from_env()
    if world.size > 1 and not args.out:
        return _usage_error("under torchrun, --prompts needs --out FILE (each process writes a part of it)")
    try:
        wait = distributed.peer_wait(args.peer_timeout)
    except ValueError as err:
        return _usage_error(str(err))
    items, errors = batch.read_prompts(args.prompts)
    loud = world.rank == 0  # one process reports for all
    with distributed.joined(world, args.device, wait) as device, contextlib.ExitStack() as owned:
        try:
            note = owned.enter_context(distributed.owning(args.out, args.prompts, world))
            todo, skipped, target = distributed.share(args.out, recipe.fingerprint, items, world,
                                                      args.batch_size, args.logprobs)
        except distributed.PeerFailed:
            return 1
        if note and loud:
            print(f"decode: {note}", file=sys.stderr)
        for e in errors if loud else ():  # bad lines first, so they show before a long run
            print(f"decode: skipped {e.describe(args.prompts)}", file=sys.stderr)
        if skipped and loud:
            print(f"decode: resuming: {skipped} of {len(items)} prompts are already in {args.out}",
                  file=sys.stderr)
        seed = args.seed if args.seed is not None else (recipe.seed if recipe.seed is not None else 0)
        failed: list = []
        interrupted = False
        if todo:
            model = decode.load(args.model, device=device, dtype=args.dtype)
            if _logprobs_problem(args, model):
                return _usage_error(_logprobs_problem(args, model))
            plan = lower(recipe)
            out = batch.appending(target) if target else contextlib.nullcontext(_stdout_writer)
            label = "decoding" if world.size == 1 else f"rank 0 of {world.size} decoding its share"
            progress = _progress(len(todo), label) if loud else contextlib.nullcontext(lambda n, t: None)
            with out as write, progress as advance:
                try:
                    failed = batch.decode_batches(plan, model, todo, write, seed=seed,
                                                  batch_size=args.batch_size, compiled=not args.no_compile,
                                                  on_batch=advance, logprobs=args.logprobs,
                                                  refill=getattr(args, "refill", False))
                except KeyboardInterrupt:
                    interrupted = True
        if interrupted:  # the parts keep what is done; a rerun merges them
            return _batch_summary(args, len(items), skipped, len(todo), errors, failed, True) if loud else 130
        decoded, failed = distributed.finish(args.out, items, world, len(todo), failed)
    if not loud:
        return 0
    return _batch_summary(args, len(items), skipped, decoded, errors, failed, False)


def _stdout_writer(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@contextlib.contextmanager
def _progress(total: int, label: str = "decoding"):
    """A rich progress bar on stderr (prompts done, tokens/s, ETA); yields advance(n, tokens)."""
    import time

    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    start = time.perf_counter()
    state = {"tokens": 0}
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("prompts · {task.fields[tps]} tok/s ·"), TimeElapsedColumn(),
                   TextColumn("· ETA"), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=False)
    task = bar.add_task("decode", total=total, tps="-")

    def advance(prompts: int, tokens: int) -> None:
        state["tokens"] += tokens
        rate = state["tokens"] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, advance=prompts, tps=f"{rate:,.0f}")

    with bar:
        yield advance


def _batch_summary(args, total, skipped, todo, errors, failed, interrupted) -> int:
    where = args.out or "stdout"
    bad = len(errors) + len(failed)
    for e in failed:
        print(f"decode: failed {e.describe(args.prompts)}", file=sys.stderr)
    if interrupted:
        print(f"decode: interrupted; {where} holds every prompt finished so far. Run the same "
              f"command again to resume.", file=sys.stderr)
        return 130
    ok = todo - len(failed)
    line = f"decode: {ok} prompts decoded" + (f", {skipped} already done" if skipped else "")
    line += f" -> {where}"
    if bad:
        line += (f"; {bad} line{'s' if bad != 1 else ''} failed ({len(errors)} malformed, "
                 f"{len(failed)} refused by the model), listed above")
    print(line, file=sys.stderr)
    return 1 if bad else 0


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="decode prompts with a recipe",
                       description="Decode a prompt, or a JSONL file of prompts, with RECIPE (a .dec "
                                   "file or inline text) on a llama checkpoint (default: the bundled "
                                   "demo model). One sequence streams as it comes; beams and samples "
                                   "print a table; --json prints the JSON object of each prompt.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--model", default=None,
                   help="HF llama dir, Meta dir, llama2.c .bin, or org/name[@rev] in the local HF cache")
    p.add_argument("--prompt", default=None, help="prompt text")
    p.add_argument("--prompt-ids", default=None, help="prompt token ids, e.g. 1,2,3")
    p.add_argument("--chat", action="store_true",
                   help="--prompt is a user message: apply the model's chat template (instruct models)")
    p.add_argument("--system", default=None, metavar="TEXT", help="with --chat: a system message first")
    p.add_argument("--prompts", default=None, metavar="FILE.jsonl",
                   help='a JSONL file of {"id": ..., "prompt": "..."} (or "prompt_ids": [...]) lines; '
                        "with --out, a rerun resumes where the last one stopped")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt on stdout")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="append JSON lines to this file (with --prompts: one per id, resumable)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="prompts decoded together with --prompts (default 8)")
    p.add_argument("--refill", action="store_true",
                   help="with --prompts: continuous batching, a finished prompt's rows take the next "
                        "waiting prompt (greedy and sample n with stateless stages; lines are written "
                        "as prompts finish, in that order; other recipes run batch by batch)")
    p.add_argument("--yes", action="store_true",
                   help="run a sweep of more than 10,000 points (otherwise refused as a likely mistake)")
    p.add_argument("--max", type=_whole(1), default=None, metavar="N",
                   help="at most N new tokens: overrides the recipe's `max` (the fingerprint follows)")
    p.add_argument("--seed", type=_whole(0, 2**64 - 1), default=None,
                   help="RNG seed for sampling recipes (with --prompts, default: the recipe's seed "
                        "or 0; each prompt's seed derives from it and the prompt's id)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None,
                   help="fp32, bf16, fp16, or int8 (weight-only int8 linears, the rest in fp32 on CPU)")
    p.add_argument("--no-compile", action="store_true", help="run the step eagerly")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="record every candidate of every step as JSON lines (see `decode viz`)")
    p.add_argument("--logprobs", type=_whole(0), default=0, metavar="N",
                   help="give every new token its log-prob and the N likeliest tokens, under the model's "
                        "distribution (raw) and after the recipe's stages (processed): in the JSON, or a "
                        "table per sequence")
    p.add_argument("--peer-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="under torchrun: how long to wait for every process to start (default "
                        "$DECODE_PEER_TIMEOUT or 300)")
    _add_stage_option(p)
    p.set_defaults(func=cmd_run)


# -- viz ---------------------------------------------------------------------------------

def cmd_viz(args: argparse.Namespace) -> int:
    from rich.console import Console

    from decode.traces.viz import (TraceError, page_problem, read_trace, render_html, render_terminal,
                                   write_page)

    problem = page_problem(args.html, args.trace) if args.html else None
    if problem:
        return _usage_error(problem)
    try:
        trace = read_trace(args.trace)
    except TraceError as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    if trace.torn is not None:
        print(f"decode: warning: {args.trace}:{trace.torn}: the last line is cut short (the run was "
              f"stopped while writing it); drawing the lines before it", file=sys.stderr)
    if args.html:
        page = render_html(trace)
        try:
            write_page(args.html, page)
        except OSError as err:
            print(f"decode: cannot write {args.html}: {err.strerror or err}", file=sys.stderr)
            return 1
        print(f"wrote {args.html} ({len(page) // 1024 + 1} KiB, {trace.kept} kept tokens)", file=sys.stderr)
        return 0
    render_terminal(trace, Console(highlight=False), pruned=args.pruned)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import decode
    from decode.report.metrics import points
    from decode.report.page import PAGE_START, columns, render, rows
    from decode.report.read import ReportError, read_results_file
    from decode.report.score import score
    from decode.runtime import ModelError
    from decode.traces.record import replace_problem
    from decode.traces.viz import write_page

    if args.html:
        problem = replace_problem("--html", args.html, "a page `decode report` wrote", ".html",
                                  lambda f: f.read(len(PAGE_START.encode())) == PAGE_START.encode())
        if problem:
            return _usage_error(problem)
    try:
        lines, torn = read_results_file(args.results)
        if torn is not None:
            print(f"decode: warning: {args.results}:{torn}: the last line is cut short; reporting the "
                  "lines before it", file=sys.stderr)
        found = points(lines)
        model = decode.load(args.model, device="cpu")
        score(found, model)
    except (ReportError, ModelError) as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    name = args.model or "the demo model"
    table = Table(title=f"{args.results}: {len(found)} points, log-probs under {name}", title_justify="left")
    for col in columns(found):
        table.add_column(col)
    for r in rows(found):
        table.add_row(*r)
    out = Console(highlight=False)
    # piped to a file, the table is a record to read later: give it room rather than 80 columns
    (out if out.is_terminal else Console(highlight=False, width=200)).print(table)
    if args.html:
        try:
            write_page(args.html, render(found, args.results, name))
        except OSError as err:
            print(f"decode: cannot write {args.html}: {err.strerror or err}", file=sys.stderr)
            return 1
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a sweep's results per point: diversity, log-prob, length, speed",
                       description="Per point of a results file (a sweep's, or any `decode run --out`): "
                                   "mean new tokens, distinct-1/2, seq-rep-4, mean log-prob and perplexity "
                                   "under --model, finish reasons, tokens/s.")
    p.add_argument("results", metavar="RESULTS.jsonl")
    p.add_argument("--html", default=None, metavar="FILE", help="also write one self-contained page with a chart")
    p.add_argument("--model", default=None, help="the model that scores the texts (default: the demo model)")
    p.set_defaults(func=cmd_report)


def add_viz(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("viz", help="draw a search trace as a tree (terminal or HTML)",
                       description="Draw the search tree recorded by `decode run ... --trace TRACE`: "
                                   "kept tokens as nodes, pruned candidates dimmed, finished nodes "
                                   "marked, diverse groups coloured, returned sequences ranked.")
    p.add_argument("trace", metavar="TRACE")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="write one self-contained HTML page (inline SVG) instead; an existing FILE "
                        "is replaced only if it is such a page")
    p.add_argument("--pruned", type=_whole(0), default=3, metavar="N",
                   help="pruned alternatives listed per branch in the terminal (default 3, 0: none)")
    p.set_defaults(func=cmd_viz)


# -- the command table -------------------------------------------------------------------

# -- bench -------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    text, recipe = _load(args.recipe)
    import torch

    from decode.perf.bench import SHAPES, bench, random_model
    from decode.runtime import ModelError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.model is not None or args.shape == "demo":
            import decode
            model = decode.load(args.model, device=args.device, dtype=args.dtype)
            shape = args.model or "demo"
        elif args.shape in SHAPES:
            model, shape = random_model(args.shape, args.device, args.dtype), args.shape
        else:
            return _usage_error(f"unknown --shape {args.shape!r}; use one of demo, "
                                + ", ".join(SHAPES) + " (or --model PATH)")
        res = bench(recipe, model=model, shape=shape, vs_hf=args.vs_hf, batch=args.batch,
                    new=args.new, repeats=args.repeats, clock=args.clock)
    except (ModelError, ValueError) as err:
        hint = (f" (decode bench ran a random --shape {args.shape} model, with random weights and its "
                "own vocabulary; for a recipe that needs the bundled model's, give --shape demo)"
                if isinstance(err, ModelError) and args.model is None and args.shape != "demo" else "")
        print(f"decode: {err}{hint}", file=sys.stderr)
        return 1
    if args.json:
        import json
        from dataclasses import asdict
        print(json.dumps({"meta": res["meta"], "rows": [asdict(r) for r in res["rows"]],
                          "ratios": res["ratios"]}))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    m = res["meta"]
    table = Table(title=f"{escape(m['recipe'])}  [dim]({m['fingerprint']})[/dim]",  # a recipe may hold "[/x]"
                  caption=f"{m['shape']} · batch {m['batch']} · {m['rows']} rows · {m['new']} new tokens · "
                          f"{m['device']} {m['dtype']} · {m['threads']} threads · {m['clock']} clock · "
                          f"best of {args.repeats}")
    for col in ("", "ms/step", "tokens/s", "compile s", "peak MB", "note"):
        table.add_column(col, justify="right" if col and col != "note" else "left")
    for r in res["rows"]:
        table.add_row(r.name, f"{r.ms:.2f}", f"{r.tok_s:.0f}",
                      "" if r.compile_s is None else f"{r.compile_s:.1f}",
                      "" if r.peak_mb is None else f"{r.peak_mb:.0f}", r.note)
    console = Console()
    console.print(table)
    console.print("  ".join(f"{k} [bold]{v:.2f}[/bold]" for k, v in res["ratios"].items()))
    if "acceptance" in m:  # draft / lookup
        console.print(f"drafts accepted [bold]{m['acceptance']:.0%}[/bold] ({m['accepted']} of {m['proposed']}, "
                      f"{m['rounds']} rounds for {m['steps']} tokens a row)")
    if m["note"]:
        console.print(f"[dim]{escape(m['note'])}[/dim]")
    return 0


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="ms/step side by side with transformers and the matmul floor",
                       description="Time RECIPE's decoding step against the reference generate "
                                   "(--vs-hf), the bare matmul floor and the bandwidth roofline, in "
                                   "one run. Read the ratios: absolute times drift with load.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--model", default=None, help="a checkpoint (default: a random --shape)")
    p.add_argument("--shape", default="24m", help="demo, 24m, 110m, 1b or 7b (random weights)")
    p.add_argument("--vs-hf", action="store_true", help="also time transformers' generate")
    p.add_argument("--batch", type=_whole(1), default=1, help="prompts decoded together")
    p.add_argument("--new", type=_whole(1), default=64, help="new tokens per prompt")
    p.add_argument("--repeats", type=_whole(1), default=5, help="timed runs (best is reported)")
    p.add_argument("--threads", type=_whole(0), default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 or int8 (weight-only)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="cpu: this thread's CPU time, robust on a shared machine (with --threads 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)


# -- detect ------------------------------------------------------------------------------

def cmd_detect(args: argparse.Namespace) -> int:
    import decode
    from decode import jsonl
    from decode.runtime import ModelError
    from decode.runtime.errors import require_tokenizer
    from decode.watermark.detect import Settings, detect, read_source

    flags = dict(gamma=args.gamma, key=args.key, scheme=args.scheme, width=args.width)
    if not math.isfinite(args.threshold):
        return _usage_error(f"--threshold {args.threshold}: give a finite z-score, e.g. 4 (the paper's)")
    if _looks_like_a_path(args.source) and not os.path.exists(args.source):
        print(f"decode: warning: no file {args.source}; scoring those characters as the text itself",
              file=sys.stderr)
    if args.recipe is not None and any(v is not None for v in flags.values()):
        return _usage_error("give the watermark settings as --recipe or as flags, not both")
    try:
        settings = Settings.from_recipe(_load(args.recipe)[1]) if args.recipe else Settings.from_flags(**flags)
        model = decode.load(args.model, device="cpu")
        for where, what in read_source(args.source):
            ids = require_tokenizer(model).encode(what, bos=False) if isinstance(what, str) else what
            found = detect(ids, model.config.vocab_size, settings, model.config.bos_id)
            out = found.to_json(settings, args.threshold, **where)
            print(jsonl.dumps(out) if args.json else _detected_text(found, where, args.threshold), flush=True)
    except RecipeError:
        raise  # main shows it with its caret
    except (ModelError, ValueError) as err:
        print(f"decode: {err}", file=sys.stderr)
        return 1
    return 0


def _looks_like_a_path(arg: str) -> bool:
    """One word with a slash or a file ending (`out.jsonl`): meant as a file, most likely."""
    return len(arg.split()) == 1 and ("/" in arg or os.path.splitext(arg)[1].lower() in (".jsonl", ".json", ".txt"))


def _detected_text(found, where: dict, threshold: float) -> str:
    at = "".join(f"{k} {v}  " for k, v in where.items() if isinstance(v, int))  # line, sequence
    verdict = f"watermarked (z > {threshold:g})" if found.watermarked(threshold) else "not watermarked"
    return (f"{at}z={found.z:.2f}  p={found.p:.3g}  green {found.green}/{found.scored} "
            f"({100 * found.green / found.scored:.1f}%)  {verdict}")


def add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="z-score and p-value of the `watermark` stage in a text",
                       description="Count the green tokens of SOURCE under the `watermark` greenlists "
                                   "and print transformers' WatermarkDetector z-score and p-value. "
                                   "SOURCE is a file or the text itself: a file of `decode run --json` "
                                   "lines has each sequence's ids scored (the tokens as generated); any "
                                   "other file is one text, tokenised with the model's tokenizer.")
    p.add_argument("source", metavar="FILE|TEXT")
    p.add_argument("--model", default=None, help="the checkpoint the text came from (default: the demo model)")
    p.add_argument("--recipe", default=None, metavar="RECIPE",
                   help="take the settings from this recipe's watermark clause")
    p.add_argument("--gamma", type=float, default=None, help="green fraction (default 0.25)")
    p.add_argument("--key", type=int, default=None, help="hashing key (default 15485863)")
    p.add_argument("--scheme", default=None, help="lefthash (default) or selfhash")
    p.add_argument("--width", type=int, default=None, help="tokens of context (default 1)")
    p.add_argument("--threshold", type=float, default=4.0, help="z above which a text counts as watermarked")
    p.add_argument("--json", action="store_true", help="one JSON object per text (format: README)")
    p.set_defaults(func=cmd_detect)


# To add a subcommand (run, bench, viz): write `add_<name>(sub)` that calls
# sub.add_parser(...) and set_defaults(func=cmd_<name>), import torch inside cmd_<name>,
# and append add_<name> below. A handler returns the exit status.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_check,
    add_fmt,
    add_explain,
    add_run,
    add_viz,
    add_report,
    add_replay,
    add_bench,
    add_detect,
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


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"decode: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 bad recipe or file, 2 bad usage,
    130 interrupted).

        >>> main(["check", "greedy"])
        0
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C anywhere: while torch imports, a model loads, ...
        print("\ndecode: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    # torch warns at import when numpy is absent; decode never needs numpy
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    warnings.showwarning = _one_line_warning
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
    except PluginError as err:  # a user stage or search went wrong while decoding
        print(f"decode: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"decode: {err.strerror or err}{': ' + str(err.filename) if err.filename else ''}",
              file=sys.stderr)
        return 1
