"""Where a batch-1 step's matrix products go, fp32 against int8: each linear of the 24.4M
shape alone at one row, best of many calls, this thread's CPU time, with the weight bytes it
reads and the rate that makes (issue 21: why int8 is slower than llama.cpp's q8_0).

    python benchmarks/int8_linears.py --threads 1 --rows 1
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from decode.perf.bench import _linears, random_model

NAMES = ("wqkv", "wo", "w13", "w2")  # a block's linears in _linears' order (fused model)


def profile(dtype: str, shape: str, rows: int, reps: int) -> dict[str, list]:
    """{linear name: [count, best seconds summed over the layers, bytes, weight shape]}."""
    m = random_model(shape, dtype=dtype)
    lins, out = list(_linears(m)), {}
    with torch.inference_mode():
        for i, lin in enumerate(lins):
            name = "output" if i == len(lins) - 1 else NAMES[i % len(NAMES)]
            x = torch.randn(rows, lin.weight.shape[1])
            call = (lambda x=x: m._head(x)) if name == "output" else (lambda x=x, lin=lin: lin(x))
            best = float("inf")
            for _ in range(reps):
                t0 = time.thread_time()
                call()
                best = min(best, time.thread_time() - t0)
            nbytes = sum(b.numel() * b.element_size() for b in (lin.weight, getattr(lin, "scales", None))
                         if b is not None)
            row = out.setdefault(name, [0, 0.0, 0, tuple(lin.weight.shape)])
            row[0], row[1], row[2] = row[0] + 1, row[1] + best, row[2] + nbytes
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {dt: profile(dt, args.shape, args.rows, args.reps) for dt in ("fp32", "int8")}
    print(f"shape {args.shape}, {args.rows} row(s), {args.threads} thread(s), CPU clock, best of {args.reps}\n")
    print("| linear | weight | layers | fp32 ms | fp32 GB/s | int8 ms | int8 GB/s | int8 / fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (n, t, b, shp) in res["fp32"].items():
        _, t8, b8, _ = res["int8"][name]
        print(f"| {name} | {shp[0]} x {shp[1]} | {n} | {t * 1e3:.3f} | {b / t / 1e9:.1f} | {t8 * 1e3:.3f} | "
              f"{b8 / t8 / 1e9:.1f} | {t8 / t:.2f} |")
    tot = {dt: sum(r[1] for r in rows.values()) for dt, rows in res.items()}
    print(f"| all | | | {tot['fp32'] * 1e3:.3f} | | {tot['int8'] * 1e3:.3f} | | {tot['int8'] / tot['fp32']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
