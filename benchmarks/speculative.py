"""Speculative decoding side by side, in one run: plain greedy, `lookup` on a repetitive task
(prompts that quote a speech four times; the output repeats itself), and `draft` with the
demo pair.

    python benchmarks/speculative.py [--draft PATH] [--max 128] [--no-compile]

Prints tokens/s of each, the speed-up over plain greedy and the draft acceptance rate
(accepted / proposed); the tokens are checked equal to plain greedy's.
"""
from __future__ import annotations

import argparse
import time

import torch

import decode

# The repetitive task: each prompt quotes one speech four times over. The demo model does not
# copy a passage it was shown (4M parameters, no induction to speak of: given a passage twice
# and its first line again, it goes its own way), but it repeats itself: on these prompts its
# greedy output falls into a loop of a speech, which prompt lookup then drafts whole.
VERSES = ("ROMEO:\nBut soft, what light through yonder window breaks?\n\n",
          "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n",
          "HAMLET:\nTo be, or not to be, that is the question.\n\n",
          "ROMEO:\nI am a traitor, my lord, and my father's son.\n\n")
PROMPTS = [v * 4 for v in VERSES]


def timed(m, recipe, prompts, compiled, clock):
    """One run, the prompts one at a time (batch 1): (outputs, new tokens per second of
    `clock`, accepted / proposed or None)."""
    outs, dt = [], 0.0
    for p in prompts:
        t = clock()
        outs += decode.generate(m, recipe, [p], compile=compiled)
        dt += clock() - t
    n = sum(len(s.ids) for c in outs for s in c.sequences)
    spec = [s.speculative for c in outs for s in c.sequences if s.speculative]
    rate = (sum(sum(x["accepted"]) for x in spec) / max(1, sum(sum(x["proposed"]) for x in spec))
            if spec else None)
    return outs, n / dt, rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--draft", default="demo-draft")
    p.add_argument("--max", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7, help="timed runs per recipe, interleaved; best is kept")
    p.add_argument("--clock", default="cpu", choices=("wall", "cpu"),
                   help="cpu: this thread's CPU time (one thread; robust on a shared machine)")
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    m = decode.load()
    recipes = {"greedy": f"greedy | max {a.max}", "lookup": f"greedy | lookup n=2 k=10 | max {a.max}",
               "lookup6": f"greedy | lookup n=2 k=6 | max {a.max}",
               "draft": f'greedy | draft "{a.draft}" k=4 | max {a.max}',
               "draft2": f'greedy | draft "{a.draft}" k=2 | max {a.max}'}
    for r in recipes.values():  # warm: compile, caches
        decode.generate(m, r, PROMPTS, compile=not a.no_compile)
    best, outs, rates = dict.fromkeys(recipes, 0.0), {}, {}
    for _ in range(a.rounds):
        for name, r in recipes.items():
            outs[name], tps, rates[name] = timed(m, r, PROMPTS, not a.no_compile, clock)
            best[name] = max(best[name], tps)
    base = [c.sequences[0].ids for c in outs["greedy"]]
    print(f"demo model, {len(PROMPTS)} prompts one at a time (batch 1), up to {a.max} new tokens, 1 thread, {a.clock} clock, best of {a.rounds} "
          f"interleaved runs, {'eager' if a.no_compile else 'compiled'}\n")
    print("| recipe | tokens/s | over greedy | drafts accepted | greedy's tokens |\n|---|---|---|---|---|")
    for name, r in recipes.items():
        same = [c.sequences[0].ids for c in outs[name]] == base
        rate = "–" if rates[name] is None else f"{rates[name]:.0%}"
        print(f"| `{r.replace('|', chr(92) + '|')}` | {best[name]:.1f} | {best[name] / best['greedy']:.2f} | "
              f"{rate} | {same} |")


if __name__ == "__main__":
    main()
