"""The GPU check of the performance issue, as one short script for a lent GPU machine.

    python benchmarks/gpu.py --out benchmarks/results-gpu.md

1. Correct on CUDA: on a small random llama in fp32, greedy and beam 4 give the
   reference `generate`'s tokens (when transformers is installed), and the compiled step
   (CUDA graphs) gives the eager step's tokens for greedy, beam 4 and a seeded sample.
2. Fast: a 7B-shaped random llama (or the largest shape that fits) in bf16, batch 1,
   greedy and beam 4: ms/step, and the fraction of the HBM roofline reached (weight +
   KV bytes one step must read / measured device copy bandwidth).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from decode.perf.bench import SHAPES, bench, random_model
from decode.compiler.engine import generate
from standard import emit

CHECKS = ["greedy | max 24", "beam 4 | max 24", "sample | topp 0.9 | temp 0.8 | max 24"]


def check_correct(dev) -> list[str]:
    lines = []
    m = random_model("24m", dev, torch.float32)
    prompts = [[1, 5, 9, 33, 7], [1, 400, 401]]
    for recipe in CHECKS:
        eager = generate(m, recipe, prompts, seed=3, compile=False)
        comp = generate(m, recipe, prompts, seed=3)
        same = all(a.sequences[i].ids == b.sequences[i].ids
                   for a, b in zip(eager, comp) for i in range(len(a.sequences)))
        lines.append(f"| compiled == eager | {recipe} | {'yes' if same else 'NO'} |")
    try:
        from decode.perf.bench import to_hf

        hf = to_hf(m)
        for recipe, kw in (("greedy | max 24", {}), ("beam 4 | max 24", {"num_beams": 4, "num_return_sequences": 4})):
            ours = generate(m, recipe, prompts[:1])[0]
            ids = torch.tensor(prompts[:1], device=dev)
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                              do_sample=False, pad_token_id=2, **kw)
            ref = [row[ids.shape[1]:].tolist() for row in out]
            got = [s.ids + [2] * (len(ref[0]) - len(s.ids)) for s in ours.sequences]
            lines.append(f"| same tokens as transformers | {recipe} | {'yes' if got == ref else 'NO'} |")
    except ImportError:
        lines.append("| same tokens as transformers | – | transformers not installed |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default=None, help="default: the largest of 7b, 1b, 110m that fits")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA device; this machine has none.", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    lines = [f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", "",
             "| check | recipe | result |", "|---|---|---|", *check_correct(dev), ""]
    free = torch.cuda.mem_get_info(dev)[0]
    shapes = [args.shape] if args.shape else [s for s in ("7b", "1b", "110m")
                                              if 2.6 * _params(s) * 2 < free]
    shape = shapes[0]
    model = random_model(shape, dev, args.dtype)
    lines += [f"shape {shape} ({_params(shape) / 1e9:.2f}B params), {args.dtype}, batch 1, "
              f"{args.new} new tokens, best of {args.repeats}", "",
              "| recipe | rows | ms/step | tokens/s | roofline ms | fraction of roofline | compile s |",
              "|---|---|---|---|---|---|---|"]
    for recipe in ("greedy", "beam 4"):
        r = bench(recipe, model=model, shape=shape, new=args.new, repeats=args.repeats)
        rows = {row.name.split(" (")[0]: row for row in r["rows"]}
        ours, roof = rows["decode"], rows["bandwidth roofline"]
        lines.append(f"| {recipe} | {r['meta']['rows']} | {ours.ms:.2f} | {ours.tok_s:.0f} | {roof.ms:.2f} | "
                     f"{roof.ms / ours.ms:.2f} | {ours.compile_s:.1f} |")
        print(lines[-1], flush=True)
    return emit(lines, args.out)


def _params(shape: str) -> int:
    vocab, dim, layers, heads, kv, ff = SHAPES[shape]
    head = dim // heads
    return 2 * vocab * dim + layers * (dim * head * (heads + 2 * kv) + dim * dim + 3 * dim * ff)


if __name__ == "__main__":
    sys.exit(main())
