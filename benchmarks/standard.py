"""The standard benchmark set: each recipe side by side with transformers' generate, the
matmul floor and the bandwidth roofline, in one process. Writes a markdown table.

    python benchmarks/standard.py --shape 24m --threads 1 --out benchmarks/results.md
    python benchmarks/standard.py --batches 1,4,16,32 --recipes greedy,nucleus

Ratios are the result (this machine is shared and noisy): ours/floor < 1 means the step
costs less than the reference layout's matrix products alone.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from decode.compiler.bench import bench, random_model

STANDARD = {
    "greedy": "greedy",
    "nucleus": "sample | temp 0.7 | topp 0.9",
    "beam 4": "beam 4",
    "diverse 4/2": "beam 4 | diverse groups=2 penalty=0.5",
    "card: diverse beam sampling": "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7",
    "sbeam 4": "sbeam 4",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batches", default="1")
    ap.add_argument("--recipes", default=",".join(STANDARD))
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="cpu: this thread's CPU time (use with --threads 1 on a shared machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_model(args.shape)
    lines = [f"shape {args.shape}, {args.new} new tokens, {torch.get_num_threads()} threads, "
             f"{args.clock} clock, "
             f"best of {args.repeats}, {time.strftime('%Y-%m-%d')}", "",
             "| recipe | batch | rows | ours ms/step | ref ms/step | floor ms | roofline ms | "
             "ours/floor | ref/ours | ours/roofline | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.recipes.split(","):
        recipe = STANDARD.get(name, name)
        for b in (int(x) for x in args.batches.split(",")):
            r = bench(recipe, model=model, shape=args.shape, vs_hf=not args.no_hf, batch=b,
                      new=args.new, repeats=args.repeats, clock=args.clock)
            rows = {row.name.split(" (")[0]: row for row in r["rows"]}
            ours, floor = rows["decode"], rows["matmul floor"]
            ref = rows.get("transformers generate")
            roof = rows["bandwidth roofline"]
            ratio = r["ratios"]
            line = (f"| {name} | {b} | {r['meta']['rows']} | {ours.ms:.2f} | "
                    f"{ref.ms:.2f} | " if ref else f"| {name} | {b} | {r['meta']['rows']} | {ours.ms:.2f} | – | ")
            line += (f"{floor.ms:.2f} | {roof.ms:.2f} | {ratio['ours/floor']:.2f} | "
                     f"{ratio.get('reference/ours', float('nan')):.2f} | {ratio['ours/roofline']:.2f} | "
                     f"{ours.compile_s:.1f} |")
            lines.append(line)
            print(line, flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
