"""Before and after in one run: each stage's kernel as it was at commit BEFORE and as it is
now, each `sample | <stage> | topp 0.9` over `sample | topp 0.9` (benchmarks/stages.py's
cases), compiled first, then timed round robin so that a shared machine's slow phases hit
both alike. The old kernels are the files of compiler/stages/ at BEFORE (`git show`),
loaded beside the package under another name; only the timed stage's kernel is swapped.

    python benchmarks/stages_ab.py --before 82584d6 --threads 1 --clock cpu --repeats 15
    python benchmarks/stages_ab.py --before 82584d6 --only dry,mirostat1
"""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import decode
import decode.perf.bench as pb
from stages import BASE, STAGES, _EncodeOnly, cell, with_stage

ROOT = Path(__file__).resolve().parent.parent
OLD = "stages_before"  # the package name the old kernels are loaded under


def load_before(commit: str, into: Path) -> None:
    """compiler/stages/*.py at `commit` as the package OLD under `into` (imports rewritten)."""
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{commit}:compiler/stages"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    pkg = into / OLD
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in names:
        if name.endswith(".py") and name != "__init__.py":
            text = subprocess.run(["git", "show", f"{commit}:compiler/stages/{name}"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
            (pkg / name).write_text(re.sub(r"decode\.compiler\.stages(?=[ .])", OLD, text))
    sys.path.insert(0, str(into))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the commit whose stage kernels are 'before'")
    ap.add_argument("--only", default="dry,mirostat1,repetition last=64,frequency last=64",
                    help="comma-separated names from benchmarks/stages.py's STAGES")
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        ap.error(f"unknown stage {unknown[0]!r}; STAGES has {', '.join(STAGES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before(args.before, Path(tempfile.mkdtemp()))
    lower = pb.lower

    def lower_marked(recipe):  # "before:" in front: the timed stage (the first) gets its old kernel
        before = recipe.startswith("before:")
        plan = lower(recipe.removeprefix("before:"))
        if not before:
            return plan
        first = plan.stages[0]
        old = importlib.import_module(f"{OLD}.{first.kernel.__name__.rsplit('.', 1)[1]}")
        return replace(plan, stages=(replace(first, kernel=old), *plan.stages[1:]))

    pb.lower = lower_marked
    model = pb.random_model(args.shape)
    model.tokenizer = _EncodeOnly(decode.load().tokenizer)
    recipes = {("(none)", ""): BASE}
    for n in names:
        recipes[n, "before"] = "before:" + with_stage(STAGES[n])
        recipes[n, "now"] = with_stage(STAGES[n])
    cases = {}
    for key, recipe in recipes.items():
        cases[key] = pb.Case(recipe, model, batch=1, new=args.new, clock=args.clock)
        print(f"compiled {' '.join(key)}: {cases[key].compile_s:.1f} s", flush=True)
    for rep in range(args.repeats):
        for case in cases.values():
            case.run_once()
        print(f"round {rep + 1}/{args.repeats}", flush=True)
    base = cases["(none)", ""].best
    print(f"\nshape {args.shape}, batch 1, {args.new} new tokens, {torch.get_num_threads()} threads, {args.clock} "
          f"clock, best of {args.repeats} runs interleaved, kernels before = {args.before}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print(f"| stage | kernels | ms/step | over {cell(BASE)} |\n|---|---|---|---|")
    for (name, when), case in cases.items():
        print(f"| {name} | {when} | {case.best * 1e3:.3f} | {case.best / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
