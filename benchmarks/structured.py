"""Masking overhead of structured output (issue 19): ms per step of greedy decoding on the demo
model at batch 1, with and without a JSON schema of nested objects, compiled, in one run with
the two recipes' runs interleaved (a shared machine's slow phases then hit both alike).

    python benchmarks/structured.py --threads 1 --clock cpu [--rounds 15] [--out FILE.md]

The constrained step adds the host's work between steps (the matcher takes the row's token
and writes the next bitmask in place: `constraint.masks`, timed apart here) and, inside the
compiled step, the mask's unpacking and fill, which inductor fuses into the kernel that
already reads the logits. `--clock cpu` counts the thread's CPU time, which a loaded machine
does not inflate; every part of the constrained step runs on that thread.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import decode
from decode.compiler import constraint

PLAIN = "greedy | max 48"
SCHEMA = 'greedy | json schema="recipes/schemas/character.json" | max 48'
CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
HOST: list[float] = []  # seconds in constraint.masks, per call


def _timed_masks(masks, clock):
    def timed(*args, **kw):
        t0 = clock()
        out = masks(*args, **kw)
        HOST.append(clock() - t0)
        return out
    return timed


def ms_per_step(model, recipe: str, clock: str) -> tuple[float, int]:
    timings: dict = {}
    decode.generate(model, recipe, ["ROMEO:"], timings=timings)
    return 1000 * timings["loop_cpu_s" if clock == "cpu" else "loop_s"] / timings["steps"], timings["steps"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", default="wall", choices=tuple(CLOCK))
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = decode.load()
    for recipe in (PLAIN, SCHEMA):  # compile both first
        ms_per_step(model, recipe, args.clock)
    constraint.masks = _timed_masks(constraint.masks, CLOCK[args.clock])
    runs: dict[str, list[float]] = {PLAIN: [], SCHEMA: []}
    steps = {}
    for _ in range(args.rounds):
        for recipe in runs:
            ms, steps[recipe] = ms_per_step(model, recipe, args.clock)
            runs[recipe].append(ms)
    med = {r: statistics.median(v) for r, v in runs.items()}
    best = {r: min(v) for r, v in runs.items()}
    host = 1000 * statistics.median(HOST)
    lines = [f"demo model, batch 1, {args.threads} thread(s), {args.clock} clock, {args.rounds} runs of each "
             f"interleaved, {time.strftime('%Y-%m-%d')}", "",
             "| recipe | steps | ms/step (median) | ms/step (best) |", "|---|---|---|---|"]
    cell = {r: r.replace("|", "\\|") for r in runs}  # a table cell's pipe
    lines += [f"| `{cell[r]}` | {steps[r]} | {med[r]:.3f} | {best[r]:.3f} |" for r in runs]
    lines += ["", f"masking overhead: {100 * (med[SCHEMA] / med[PLAIN] - 1):+.1f}% of the unconstrained step "
              f"(median), {100 * (best[SCHEMA] / best[PLAIN] - 1):+.1f}% (best); the host's part "
              f"(constraint.masks, median per step): {host:.3f} ms"]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
