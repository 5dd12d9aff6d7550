"""The standard benchmark set: each recipe side by side with transformers' generate, the
matmul floor and the bandwidth roofline, in one process. Writes a markdown table.

    python benchmarks/standard.py --shape 24m --threads 1 --out benchmarks/results.md
    python benchmarks/standard.py --batches 1,4,16,32 --recipes greedy,nucleus
    python benchmarks/standard.py --threads 1 --clock cpu --no-hf   # quick ratios
    python benchmarks/standard.py --threads 1 --clock cpu --recipes greedy --dtypes fp32,int8
    python benchmarks/standard.py --threads 1 --clock cpu --batches 1,16 --dtypes fp32,int8 \
        --recipes "greedy,nucleus,beam 4,diverse 4/2" --repeats 5      # issue 21's acceptance table

With the [bench] extra installed (gguf, llama-cpp-python) the same weights also run in
llama.cpp (f32 for fp32, q8_0 for int8; benchmarks/llamacpp.py checks its logits) for the
recipes its sampler chain can run, in the same rounds.

Ratios are the result (this machine is shared and noisy): ours/floor < 1 means the step
costs less than the reference layout's matrix products alone.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from _llamacpp import LlamaCpp, available
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


# the standard recipes llama.cpp's sampler chain runs as written (benchmarks/_llamacpp.py),
# and why the others have no llama.cpp figure
LLAMACPP = {"greedy": "greedy", "nucleus": "nucleus"}
NO_LLAMACPP = "llama.cpp's library has no beam search"
QTYPE = {"fp32": "f32", "int8": "q8_0"}  # llama.cpp's weights for ours


def llamacpp_side(cases: dict, args, tmp: str) -> tuple[dict, str]:
    """{case key: (LlamaCpp, sampler)} for the cases llama.cpp can run, and the table's note
    on it. The GGUF files hold the fp32 model's weights (q8_0: quantized by gguf)."""
    why = "skipped (--no-llamacpp)" if args.no_llamacpp else available()
    if why:
        return {}, f"llama.cpp column: {why}"
    from _gguf import write_gguf

    fp32 = random_model(args.shape)  # same seed: the weights every case's model started from
    files = {q: write_gguf(fp32, Path(tmp) / f"bench-{q}.gguf", q) for q in QTYPE.values()}
    side, ctxs = {}, {}
    for (name, b, dt), case in cases.items():
        if name in LLAMACPP and dt in QTYPE:
            if (dt, b) not in ctxs:  # one context per weights and batch, up to 128 slots a sequence
                ctxs[(dt, b)] = LlamaCpp(files[QTYPE[dt]], torch.get_num_threads(), seqs=b, n_ctx=128 * b)
            side[(name, b, dt)] = (ctxs[(dt, b)], LLAMACPP[name])
    return side, (f"llama.cpp: llama-cpp-python's llama.cpp, {torch.get_num_threads()} threads, f32 KV cache, "
                  "no flash attention; f32 weights for fp32, q8_0 for int8; greedy and nucleus (temp 0.7 "
                  f"then top-p 0.9, its sampler chain), every prompt a sequence of one batch; n/a: {NO_LLAMACPP}")


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
    ap.add_argument("--no-llamacpp", action="store_true", help="leave out the llama.cpp column")
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
    tmp = tempfile.TemporaryDirectory()
    side, side_note = llamacpp_side(cases, args, tmp.name)
    best_lc = {key: float("inf") for key in side}
    floors = {(dt, c.rows): float("inf") for (*_, dt), c in cases.items()}
    dev, bw = next(models[dtypes[0]].parameters()).device, 0.0
    for rep in range(args.repeats):
        bw = max(bw, bandwidth(dev))  # each round, best kept, as the timings are
        for key, case in cases.items():
            case.run_once()
            if key in side:
                lc, sampler = side[key]
                time.sleep(0.05)  # the other library's worker threads stop spinning
                best_lc[key] = min(best_lc[key], lc.generate(case.prompts, args.new, sampler, clock=args.clock)[0])
        for dt, rows in floors:
            floors[(dt, rows)] = min(floors[(dt, rows)], floor_ms(models[dt], rows, reps=5, clock=args.clock))
        print(f"round {rep + 1}/{args.repeats}: " + ", ".join(
            f"{n} {dt} {c.best * 1e3:.2f}" for (n, _, dt), c in cases.items()), flush=True)
    lines = [f"shape {args.shape}, {args.new} new tokens, {torch.get_num_threads()} threads, "
             f"{args.clock} clock, best of {args.repeats} runs interleaved across recipes, "
             f"{time.strftime('%Y-%m-%d')}; compile s: first run in the process; int8: weight-only, "
             f"the reference runs its dequantized weights in fp32", "",
             "| recipe | batch | weights | rows | ours ms/step | ref ms/step | llama.cpp ms/step | floor ms | "
             "roofline ms | ours/floor | ours/roofline | ref/ours | llama.cpp/ours | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = {}
    for (name, b, dt), case in cases.items():
        r = case.result(floor=floors[(dt, case.rows)], bw=bw, shape=args.shape)
        rows = {row.name.split(" (")[0]: row for row in r["rows"]}
        ours, floor, roof = rows["decode"], rows["matmul floor"], rows["bandwidth roofline"]
        ref = rows.get("transformers generate")
        best[(name, b, dt)] = ours.ms
        lc = best_lc[(name, b, dt)] * 1e3 if (name, b, dt) in side else None
        no_lc = "n/a" if side and name not in LLAMACPP else "–"
        lines.append(f"| {name} | {b} | {dt} | {case.rows} | {ours.ms:.2f} | {f'{ref.ms:.2f}' if ref else '–'} | "
                     f"{f'{lc:.2f}' if lc else no_lc} | {floor.ms:.2f} | {roof.ms:.2f} | {ours.ms / floor.ms:.2f} | "
                     f"{ours.ms / roof.ms:.2f} | {f'{ref.ms / ours.ms:.2f}' if ref else '–'} | "
                     f"{f'{lc / ours.ms:.2f}' if lc else no_lc} | {ours.compile_s:.1f} |")
    lines += ["", f"copy bandwidth {bw / 1e9:.1f} GB/s (read + write, best of one measure each repeat)", "", side_note]
    tmp.cleanup()
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
