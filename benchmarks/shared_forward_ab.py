"""Same-run A/B of the step as two compiled graphs (the recipe's selection, then the model's
forward shared by every recipe: compiler/forward.py) against one graph holding both (the
step before issue 21, item 4; `engine.SHARED_FORWARD = False`), on one model in one process,
the runs interleaved so that a slow phase of a shared machine hits both alike.

    python benchmarks/shared_forward_ab.py --threads 1 --clock cpu --rounds 15
    python benchmarks/shared_forward_ab.py --threads 2 --clock wall --out benchmarks/results-shared-forward.md

The figure is the median over rounds of (two graphs ms/step) / (one graph ms/step), with
each variant's best ms/step beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from decode.compiler import engine, forward
from decode.compiler.plan import compile as lower
from decode.perf.bench import _with_max, random_model
from standard import STANDARD, emit


def ms_per_step(plan, model, prompts, shared: bool, clock: str) -> float:
    engine.SHARED_FORWARD = shared
    t = {}
    engine.run(plan, model, prompts, seed=0, timings=t)
    return (t["loop_cpu_s"] if clock == "cpu" else t["loop_s"]) / t["steps"] * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--recipes", default="greedy,beam 4")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--selection-options", default="{}", help="inductor options for the selection, as JSON")
    ap.add_argument("--forward-options", default="{}", help="inductor options for the forward, as JSON")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    forward.SELECTION_OPTIONS.update(json.loads(args.selection_options))
    forward.FORWARD_OPTIONS.update(json.loads(args.forward_options))
    model = random_model(args.shape)
    g = torch.Generator().manual_seed(0)
    prompts = [[1] + torch.randint(3, model.config.vocab_size, (15,), generator=g).tolist()
               for _ in range(args.batch)]
    lines = [f"shape {args.shape}, {args.threads} torch thread(s), {args.clock} clock, batch {args.batch}, "
             f"{args.new} new tokens, {args.rounds} interleaved rounds, {time.strftime('%Y-%m-%d')}; selection "
             f"options {forward.SELECTION_OPTIONS}, forward options {forward.FORWARD_OPTIONS}", "",
             "| recipe | one graph ms/step (best) | two graphs ms/step (best) | two / one (median of rounds) |",
             "|---|---|---|---|"]
    for name in args.recipes.split(","):
        plan = _with_max(lower(STANDARD.get(name, name)), args.new)
        for shared in (False, True):  # compile both, then warm both up
            ms_per_step(plan, model, prompts, shared, args.clock)
        one, two = [], []
        for r in range(args.rounds):  # the order alternates, so neither always runs first
            for shared in ((False, True) if r % 2 == 0 else (True, False)):
                (two if shared else one).append(ms_per_step(plan, model, prompts, shared, args.clock))
        ratio = statistics.median(b / a for a, b in zip(one, two))
        lines.append(f"| {name} | {min(one):.2f} | {min(two):.2f} | {ratio:.3f} |")
        print(lines[-1], flush=True)
    engine.SHARED_FORWARD = True
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
