"""Continuous batching against batch by batch, one job, one run: a 256-prompt greedy job with
mixed lengths, decoded through the `--prompts` path (jobs/batch.decode_batches) both ways.

    python benchmarks/refill.py [--prompts 256] [--batch 16] [--max 64] [--rounds 2]

The job: the demo model with the newline as its end of sequence (a line ends a reply, as a
chat model's turn ends at its end token), so outputs end at different lengths (1 to `max`
tokens); prompts of 2 to 48 tokens cut from the model's own text. Prints tokens/s of each
way, interleaved rounds (best kept), the ratio, and checks the tokens are the same.
"""
from __future__ import annotations

import argparse
import random
import time

import torch

import decode
from decode.compiler.arguments import recipe_plan
from decode.jobs import batch


def job(m, plan, items, size, refill, clock):
    lines = []
    t = clock()
    errors = batch.decode_batches(plan, m, items, lines.append, seed=0, batch_size=size, refill=refill)
    dt = clock() - t
    assert not errors, errors
    import json
    out = {o["id"]: [s["ids"] for s in o["sequences"]] for o in map(json.loads, "".join(lines).splitlines())}
    return out, sum(len(x) for v in out.values() for x in v), dt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eos", default="\n", help="the text whose token ends a reply (default: the newline)")
    p.add_argument("--clock", default="cpu", choices=("wall", "cpu"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    m = decode.load()
    text = [t for c in decode.generate(m, "sample | temp 0.9 | max 250", ["ROMEO:"] * 8, seed=1)
            for t in c.sequences[0].ids]
    m.config.eos_ids = (m.tokenizer.encode("a" + a.eos + "b")[2],)  # the newline ends a reply
    rng = random.Random(0)
    items = []
    for n in range(a.prompts):
        length = rng.randint(2, 48)
        at = rng.randrange(0, len(text) - length)
        items.append(batch.Item(line=n + 1, id=n, prompt=[1] + text[at:at + length]))
    plan = recipe_plan(f"greedy | max {a.max}")
    for refill in (True, False):  # compile both shapes before timing
        job(m, plan, items[: 2 * a.batch], a.batch, refill, clock)
    best = {True: None, False: None}
    outs = {}
    for r in range(a.rounds):
        for refill in (False, True):
            outs[refill], tokens, dt = job(m, plan, items, a.batch, refill, clock)
            if best[refill] is None or dt < best[refill][1]:
                best[refill] = (tokens, dt)
            print(f"round {r + 1}: {'refill' if refill else 'batch by batch'} {tokens} tokens in {dt:.2f} s")
    assert outs[True] == outs[False], "the two ways gave different tokens"
    lens = sorted(len(x) for v in outs[True].values() for x in v)
    print(f"\n{a.prompts} prompts of 2-48 tokens, greedy | max {a.max}, batch {a.batch}, {a.threads} thread(s), "
          f"{a.clock} clock, EOS {a.eos!r}, best of {a.rounds}; output lengths: min {lens[0]}, median {lens[len(lens) // 2]}, "
          f"max {lens[-1]}; the tokens of both ways are the same\n")
    print("| way | tokens | s | tokens/s |\n|---|---|---|---|")
    for refill, name in ((False, "batch by batch (before)"), (True, "continuous batching (refill)")):
        tokens, dt = best[refill]
        print(f"| {name} | {tokens} | {dt:.2f} | {tokens / dt:.0f} |")
    ratio = (best[True][0] / best[True][1]) / (best[False][0] / best[False][1])
    print(f"\nrefill / batch by batch tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
