"""Compile time of the standard recipes, the model's forward apart from each recipe's
selection (issue 21, item 4), each figure from fresh processes:

- machine: the first compile on a fresh machine (an empty temp directory): inductor
  probes the CPU's vector ISAs and precompiles its kernel header, once per machine.
  Measured once, with greedy.
- cold: nothing of this model or recipe in the cache (an empty inductor cache, after a
  trivial compile has done the machine's probes in it): the forward and the selection
  compile.
- new structure: the model's forward at the recipe's shapes is in the cache (a process
  compiled it alone, the selection running eagerly), the recipe's selection is not: what a
  recipe new to the machine costs on a model and shape it decoded before. Target: <= 8 s.
- warm: the same recipe again (both graphs in the cache).

Each figure is the first run's compiles, timed as each graph's first call (the windows
`kernel_cache.watch_compiles` marks), in CPU seconds of the process and its g++ runs (one
compile thread, so inductor runs g++ as the process's children and the machine's load
does not enter the figure) with wall seconds in brackets; the selection's CPU is split into
g++ and the rest (dynamo's trace, inductor's lowering and code generation).

    python benchmarks/compile_times.py --out benchmarks/results-compile.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from standard import STANDARD, emit

PROBE = "import torch; torch.compile(lambda x: (x.exp() + 1).sum())(torch.ones(64))"

CHILD = r'''
import json, resource, sys, time, torch
from dataclasses import replace
torch.set_num_threads(1)
from torch._dynamo.utils import compilation_time_metrics as metrics
from decode.compiler import forward, step_cache
from decode.compiler.engine import run
from decode.compiler.kernel_cache import watch_compiles
from decode.compiler.plan import compile as lower
from decode.perf.bench import random_model
what, recipe, shape = sys.argv[1], sys.argv[2], sys.argv[3]
forward.SELECTION_OPTIONS.update(json.loads(sys.argv[4]))
forward.FORWARD_OPTIONS.clear()
forward.FORWARD_OPTIONS.update(json.loads(sys.argv[5]))
m = random_model(shape)
plan = replace(lower(recipe), max_new=8)


def clocks():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (time.perf_counter(), me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime,
            sum(metrics.get("bytecode_tracing", [])), len(metrics.get("compile_file", [])))


parts, start = {}, {}


def watch(starting, name):
    if starting:
        start[name] = clocks()
    else:
        wall, me, gxx, trace, n = (b - a for a, b in zip(start[name], clocks()))
        key = "forward" if name == forward.FORWARD else "selection"
        parts[key] = {"s": wall, "cpu": me + gxx, "gxx": gxx, "trace": trace, "builds": n}


if what == "forward":  # the forward alone: the selection runs eagerly
    compile_step = step_cache.compile_step
    step_cache.compile_step = lambda fn, name, compiled, cuda, what=step_cache.STEP, options=None: compile_step(
        fn, name, compiled and what == forward.FORWARD, cuda, what, options)
with watch_compiles(watch):
    run(plan, m, [[1, 5, 9, 13, 7, 11, 3, 8]], seed=0)
print(json.dumps(parts))
'''


def child(what: str, recipe: str, shape: str, env: dict, options: tuple[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what, recipe, shape, *options], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def total(parts: dict) -> tuple[float, float]:
    return sum(p["cpu"] for p in parts.values()), sum(p["s"] for p in parts.values())


def cell(cpu: float, wall: float) -> str:
    return f"{cpu:.1f} ({wall:.1f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--recipes", default="greedy,nucleus,beam 4,diverse 4/2")
    ap.add_argument("--selection-options", default="{}", help="inductor options for the selection, as JSON")
    ap.add_argument("--forward-options", default=None, help="inductor options for the forward, as JSON "
                    "(default: compiler/forward.py's FORWARD_OPTIONS)")
    ap.add_argument("--no-machine", action="store_true", help="skip the fresh machine's first compile")
    ap.add_argument("--compile-threads", type=int, default=1,
                    help="inductor's compile threads (above 1 its pool's g++ runs are not in the CPU figures)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.forward_options is None:
        from decode.compiler.forward import FORWARD_OPTIONS

        args.forward_options = json.dumps(FORWARD_OPTIONS)
    options = (args.selection_options, args.forward_options)
    lines = [f"shape {args.shape}, 1 torch thread, {args.compile_threads} compile thread(s), {os.cpu_count()} CPUs (shared, "
             f"loaded), {time.strftime('%Y-%m-%d')}; inductor options: selection {args.selection_options}, forward "
             f"{args.forward_options}", ""]
    base = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(args.compile_threads)}
    if not args.no_machine:
        with tempfile.TemporaryDirectory() as fresh:  # a machine that never compiled anything
            env = {**base, "TMPDIR": fresh, "TORCHINDUCTOR_CACHE_DIR": os.path.join(fresh, "cache")}
            first = total(child("run", STANDARD["greedy"], args.shape, env, options))
        lines += [f"First compile on a fresh machine (greedy; includes the one-time ISA probes and "
                  f"header precompile): {cell(*first)} CPU s (wall s)", ""]
    lines += ["CPU seconds of the first run's compiles (wall seconds in brackets):", "",
              "| recipe | cold: forward + selection | new structure (forward cached) | of which the forward, "
              "from the cache | the selection | of which g++ | dynamo's trace (wall) | g++ runs | warm |",
              "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.recipes.split(","):
        recipe = STANDARD.get(name, name)
        with tempfile.TemporaryDirectory() as cache:
            env = {**base, "TORCHINDUCTOR_CACHE_DIR": cache}
            subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True)
            cold = child("run", recipe, args.shape, env, options)
        with tempfile.TemporaryDirectory() as cache:
            env = {**base, "TORCHINDUCTOR_CACHE_DIR": cache}
            subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True)
            child("forward", recipe, args.shape, env, options)
            new = child("run", recipe, args.shape, env, options)
            warm = child("run", recipe, args.shape, env, options)
        f, s = new["forward"], new["selection"]
        lines.append(f"| {name} | {cell(*total(cold))} | {cell(*total(new))} | {cell(f['cpu'], f['s'])} | "
                     f"{cell(s['cpu'], s['s'])} | {s['gxx']:.1f} | {s['trace']:.1f} | {s['builds']} | "
                     f"{cell(*total(warm))} |")
        print(lines[-1], flush=True)
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
