"""Speculative decoding side by side, in one run: plain greedy, `lookup` on prompts that quote
long passages (the output goes on quoting them), and `draft` with the demo pair.

    python benchmarks/speculative.py [--draft PATH] [--max 64] [--no-compile]

Prints tokens/s of each, the speed-up over plain greedy and the draft acceptance rate
(accepted / proposed); the tokens are checked equal to plain greedy's.
"""
from __future__ import annotations

import argparse
import time

import torch

import decode

PASSAGE = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet "
           "is the sun.\nArise, fair sun, and kill the envious moon,\nWho is already sick and pale "
           "with grief,\nThat thou her maid art far more fair than she:\n")
PROMPTS = [PASSAGE + "\nJULIET:\nWhat said he? Say it again:\n" + PASSAGE.split("\n", 1)[1][:80]]


def timed(m, recipe, prompts, compiled):
    decode.generate(m, recipe, prompts, compile=compiled)  # warm: compile, caches
    t = time.perf_counter()
    outs = decode.generate(m, recipe, prompts, compile=compiled)
    dt = time.perf_counter() - t
    n = sum(len(s.ids) for c in outs for s in c.sequences)
    spec = [s.speculative for c in outs for s in c.sequences if s.speculative]
    rate = (sum(sum(x["accepted"]) for x in spec) / max(1, sum(sum(x["proposed"]) for x in spec))
            if spec else None)
    return outs, n / dt, rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--draft", default="demo-draft")
    p.add_argument("--max", type=int, default=64)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    m = decode.load()
    base, tps0, _ = timed(m, f"greedy | max {a.max}", PROMPTS, not a.no_compile)
    print(f"{'greedy':32} {tps0:7.1f} tok/s")
    for r in (f"greedy | lookup n=2 k=10 | max {a.max}", f'greedy | draft "{a.draft}" k=4 | max {a.max}'):
        outs, tps, rate = timed(m, r, PROMPTS, not a.no_compile)
        same = [c.sequences[0].ids for c in outs] == [c.sequences[0].ids for c in base]
        print(f"{r:32} {tps:7.1f} tok/s  x{tps / tps0:.2f}  accepted {rate:.0%}  same tokens: {same}")


if __name__ == "__main__":
    main()
