"""Masking overhead of structured output (issue 19): ms per step of greedy decoding on the demo
model at batch 1, with and without a JSON schema of nested objects, compiled, in one run with
the two recipes' runs interleaved (a shared machine's slow phases then hit both alike).

    python benchmarks/structured.py [--rounds 5] [--threads 1]

The constrained step adds the host's work (the matcher advances and fills the next bitmask,
one host sync per step) and the unpacking of the bitmask inside the compiled step.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import decode

PLAIN = "greedy | max 48"
SCHEMA = 'greedy | json schema="recipes/schemas/character.json" | max 48'


def ms_per_step(model, recipe: str) -> float:
    timings: dict = {}
    decode.generate(model, recipe, ["ROMEO:"], timings=timings)
    return 1000 * timings["loop_s"] / timings["steps"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = decode.load()
    for recipe in (PLAIN, SCHEMA):  # compile both first
        ms_per_step(model, recipe)
    runs = {PLAIN: [], SCHEMA: []}
    for _ in range(args.rounds):
        for recipe in runs:
            runs[recipe].append(ms_per_step(model, recipe))
    plain, schema = (statistics.median(runs[r]) for r in (PLAIN, SCHEMA))
    print(f"{'recipe':72s} ms/step (median of {args.rounds})")
    for r in runs:
        print(f"{r:72s} {statistics.median(runs[r]):.3f}")
    print(f"masking overhead: {100 * (schema / plain - 1):+.1f}% of the unconstrained step")


if __name__ == "__main__":
    main()
