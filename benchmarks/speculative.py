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


def timed(m, recipe, prompts, compiled, clock):
    """One run: (outputs, new tokens per second of `clock`, accepted / proposed or None)."""
    t = clock()
    outs = decode.generate(m, recipe, prompts, compile=compiled)
    dt = clock() - t
    n = sum(len(s.ids) for c in outs for s in c.sequences)
    spec = [s.speculative for c in outs for s in c.sequences if s.speculative]
    rate = (sum(sum(x["accepted"]) for x in spec) / max(1, sum(sum(x["proposed"]) for x in spec))
            if spec else None)
    return outs, n / dt, rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--draft", default="demo-draft")
    p.add_argument("--max", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7, help="timed runs per recipe, interleaved; best is kept")
    p.add_argument("--clock", default="cpu", choices=("wall", "cpu"),
                   help="cpu: this thread's CPU time (one thread; robust on a shared machine)")
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    m = decode.load()
    recipes = {"greedy": f"greedy | max {a.max}", "lookup": f"greedy | lookup n=2 k=10 | max {a.max}",
               "draft": f'greedy | draft "{a.draft}" k=4 | max {a.max}'}
    for r in recipes.values():  # warm: compile, caches
        decode.generate(m, r, PROMPTS, compile=not a.no_compile)
    best, outs, rates = dict.fromkeys(recipes, 0.0), {}, {}
    for _ in range(a.rounds):
        for name, r in recipes.items():
            outs[name], tps, rates[name] = timed(m, r, PROMPTS, not a.no_compile, clock)
            best[name] = max(best[name], tps)
    base = [c.sequences[0].ids for c in outs["greedy"]]
    print(f"demo model, batch 1, {a.max} new tokens, 1 thread, {a.clock} clock, best of {a.rounds} "
          f"interleaved runs, {'eager' if a.no_compile else 'compiled'}\n")
    print("| recipe | tokens/s | over greedy | drafts accepted | greedy's tokens |\n|---|---|---|---|---|")
    for name, r in recipes.items():
        same = [c.sequences[0].ids for c in outs[name]] == base
        rate = "–" if rates[name] is None else f"{rates[name]:.0%}"
        print(f"| `{r.replace('|', chr(92) + '|')}` | {best[name]:.1f} | {best[name] / best['greedy']:.2f} | "
              f"{rate} | {same} |")


if __name__ == "__main__":
    main()
