"""The standard benchmark set: each recipe side by side with transformers' generate, the
matmul floor and the bandwidth roofline, in one process. Writes a markdown table.

    python benchmarks/standard.py --shape 24m --threads 1 --out benchmarks/results.md
    python benchmarks/standard.py --batches 1,4,16,32 --recipes greedy,nucleus
    python benchmarks/standard.py --threads 1 --clock cpu --no-hf   # quick ratios
    python benchmarks/standard.py --threads 1 --clock cpu --recipes greedy --dtypes fp32,int8

Ratios are the result (this machine is shared and noisy): ours/floor < 1 means the step
costs less than the reference layout's matrix products alone.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from decode.perf.bench import Case, bandwidth, floor_ms, random_model

STANDARD = {
    "greedy": "greedy",
    "nucleus": "sample | temp 0.7 | topp 0.9",
    "beam 4": "beam 4",
    "diverse 4/2": "beam 4 | diverse groups=2 penalty=0.5",
    "card: diverse beam sampling": "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7",
    "sbeam 4": "sbeam 4",
    "contrastive 4": "contrastive k=4 alpha=0.6",
    # the reference's batched rule (pick=batch), so that batch 8 runs the same algorithm
    "dola": "dola pick=batch | repetition 1.2",
    "force 4": "beam 4 | force ids(100, 200) any(ids(300), ids(400, 500))",
    "cfg 1.5": "cfg scale=1.5",
    "sample topp": "sample | topp 0.9",
    "watermark": "sample | watermark | topp 0.9",
}


# same-run comparisons the performance issue sets targets for: (what, over what, target)
COMPARE = [
    ("nucleus", "greedy", 1.10),
    ("diverse 4/2", "beam 4", 1.10),
    ("card: diverse beam sampling", "beam 4", 1.10),
    ("sbeam 4", "beam 4", None),
    ("force 4", "beam 4", None),
    ("cfg 1.5", "greedy", None),
    ("watermark", "sample topp", 1.05),
]


def emit(lines: list[str], out: str | None) -> int:
    """Print the markdown table, and write it to `out` if given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batches", default="1")
    ap.add_argument("--recipes", default=",".join(STANDARD))
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15,
                    help="timed runs per recipe, interleaved across recipes (round robin), "
                         "so a slow phase of a shared machine hits them all alike; best is kept")
    ap.add_argument("--dtypes", default="fp32",
                    help="weights to time side by side, e.g. fp32,int8 (each its own model, same seed)")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="cpu: this thread's CPU time (use with --threads 1 on a shared machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = args.dtypes.split(",")
    models = {dt: random_model(args.shape, dtype=dt) for dt in dtypes}
    batches = [int(x) for x in args.batches.split(",")]
    cases = {}
    for name in args.recipes.split(","):
        for b in batches:
            for dt, model in models.items():
                cases[(name, b, dt)] = Case(STANDARD.get(name, name), model, vs_hf=not args.no_hf, batch=b,
                                            new=args.new, clock=args.clock)
                print(f"compiled {name} batch {b} {dt}: {cases[(name, b, dt)].compile_s:.1f} s", flush=True)
    floors = {(dt, c.rows): float("inf") for (*_, dt), c in cases.items()}
    for rep in range(args.repeats):
        for case in cases.values():
            case.run_once()
        for dt, rows in floors:
            floors[(dt, rows)] = min(floors[(dt, rows)], floor_ms(models[dt], rows, reps=5, clock=args.clock))
        print(f"round {rep + 1}/{args.repeats}: " + ", ".join(
            f"{n} {dt} {c.best * 1e3:.2f}" for (n, _, dt), c in cases.items()), flush=True)
    lines = [f"shape {args.shape}, {args.new} new tokens, {torch.get_num_threads()} threads, "
             f"{args.clock} clock, best of {args.repeats} runs interleaved across recipes, "
             f"{time.strftime('%Y-%m-%d')}; compile s: first run in the process; int8: weight-only, "
             f"the reference runs its dequantized weights in fp32", "",
             "| recipe | batch | weights | rows | ours ms/step | ref ms/step | floor ms | roofline ms | "
             "ours/floor | ref/ours | ours/roofline | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = {}
    bw = bandwidth(next(models[dtypes[0]].parameters()).device)
    for (name, b, dt), case in cases.items():
        r = case.result(floor=floors[(dt, case.rows)], bw=bw, shape=args.shape)
        rows = {row.name.split(" (")[0]: row for row in r["rows"]}
        ours, floor, roof = rows["decode"], rows["matmul floor"], rows["bandwidth roofline"]
        ref = rows.get("transformers generate")
        best[(name, b, dt)] = ours.ms
        lines.append(f"| {name} | {b} | {dt} | {case.rows} | {ours.ms:.2f} | {f'{ref.ms:.2f}' if ref else '–'} | "
                     f"{floor.ms:.2f} | {roof.ms:.2f} | {ours.ms / floor.ms:.2f} | "
                     f"{f'{ref.ms / ours.ms:.2f}' if ref else '–'} | {ours.ms / roof.ms:.2f} | "
                     f"{ours.compile_s:.1f} |")
    lines += ["", f"copy bandwidth {bw / 1e9:.1f} GB/s (read + write)"]
    # (what, over what, target): the same-run pairs, and each dtype over the first
    pairs = [((a, b, dt), (o, b, dt), tgt) for a, o, tgt in COMPARE for b in batches for dt in dtypes]
    pairs += [((n, b, dt), (n, b, dtypes[0]), None) for (n, b, dt) in best if dt != dtypes[0]]
    pairs = [(x, y, tgt) for x, y, tgt in pairs if x in best and y in best]
    if pairs:
        lines += ["", "| same run | batch | ratio | target |", "|---|---|---|---|"]
        for x, y, tgt in pairs:
            lines.append(f"| {x[0]} {x[2]} / {y[0]} {y[2]} | {x[1]} | {best[x] / best[y]:.3f} | "
                         f"{'≤ %.2f' % tgt if tgt else '–'} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
