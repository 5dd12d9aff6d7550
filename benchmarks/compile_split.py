"""What a cold compile of a recipe's step spends on the model's forward and on the selection
(the search and the logit stages), each measured in a fresh process with an empty inductor
cache (after the machine's one-time ISA probes, as compile_times.py does):

- forward: `model.decode` alone, compiled as the engine compiles a step, at the recipe's rows;
- selection: the recipe's whole step over a model whose forward is one table lookup
  (logits = a [vocab, vocab] table's row of the token: no layers, no cache);
- step: the recipe's whole step on the model (what `decode run` compiles).

    python benchmarks/compile_split.py --out benchmarks/results-compile-split.md

If forward + selection is about the step, compiling the forward once per (model, shapes)
and only the selection per recipe (issue 21, item 4) saves the forward's share on every
new recipe structure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from standard import STANDARD, emit

PROBE = "import torch; torch.compile(lambda x: (x.exp() + 1).sum())(torch.ones(64))"

CHILD = r'''
import json, sys, time, torch
from dataclasses import replace
torch.set_num_threads(1)
from decode.perf.bench import random_model, _probe_cfg
from decode.compiler.engine import run
from decode.compiler.plan import compile as lower
what, recipe, shape, new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
m = random_model(shape)
plan = replace(lower(recipe), max_new=new)
rows = plan.search(_probe_cfg(plan)).rows
prompts = [[1, 5, 9, 13, 7, 11, 3, 8]]


class Table(torch.nn.Module):
    """The forward replaced by a table lookup: the step compiles its selection alone."""

    def __init__(self, m):
        super().__init__()
        from types import SimpleNamespace
        c = m.config
        self.config = SimpleNamespace(vocab_size=c.vocab_size, eos_ids=c.eos_ids, pad_id=None, max_seq_len=64)
        self.tokenizer = None
        self.table = torch.nn.Parameter(torch.randn(m.config.vocab_size, m.config.vocab_size) * 0.02,
                                        requires_grad=False)

    def new_cache(self, rows, max_len):
        from types import SimpleNamespace
        return SimpleNamespace(reorder=lambda i: None, follow=lambda i: None,
                               followed=lambda: None)

    def prefill(self, cache, tokens, pad):
        return self.table[tokens[:, -1]]

    def decode(self, cache, tokens, slot, pad):
        return self.table[tokens]


def cpu():
    """CPU seconds of this process and its finished children (the compiler's g++ runs)."""
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    t0, c0 = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - t0, cpu() - c0


if what == "forward":
    s_len = 32
    cache = m.new_cache(rows, s_len)
    tok, pad = torch.ones(rows, dtype=torch.long), torch.zeros(rows, dtype=torch.long)
    with torch.inference_mode():
        m.prefill(cache, torch.ones(rows, 8, dtype=torch.long), pad)
        from decode.compiler.step_cache import compile_step

        def forward(cache, tok, slot, pad):  # compiled as the engine compiles a step (weights baked in)
            return m.decode(cache, tok, slot, pad)

        step = compile_step(forward, "forward", True, False)
        cold = timed(lambda: step(cache, tok, torch.tensor(8), pad))
        warm = timed(lambda: step(cache, tok, torch.tensor(9), pad))
else:
    model = Table(m) if what == "selection" else m
    cold = timed(lambda: run(plan, model, prompts, seed=0))
    warm = timed(lambda: run(plan, model, prompts, seed=0))
print(json.dumps({"s": cold[0] - warm[0], "cpu": cold[1] - warm[1]}))
'''


def one(what: str, recipe: str, shape: str, new: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        # one compile thread: inductor runs g++ from this process, so the CPU time of the
        # compiles is counted (a shared machine's load then does not enter the figure)
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True)
        out = subprocess.run([sys.executable, "-c", CHILD, what, recipe, shape, str(new)], env=env,
                             capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--recipes", default="greedy,nucleus,beam 4,diverse 4/2")
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = [f"shape {args.shape}, 1 torch thread, {os.cpu_count()} CPUs for the compiler (shared, loaded), "
             f"{time.strftime('%Y-%m-%d')}; cold compile (first call - second call), each in a "
             "fresh process with an empty inductor cache and one compile thread: CPU seconds "
             "(this process and its g++ runs; robust to the machine's load), wall seconds in brackets", "",
             "| recipe | forward alone | selection alone | whole step | forward share of the step |",
             "|---|---|---|---|---|"]
    for name in args.recipes.split(","):
        recipe = STANDARD.get(name, name)
        f, s, w = (one(what, recipe, args.shape, args.new) for what in ("forward", "selection", "step"))
        lines.append(f"| {name} | {f['cpu']:.1f} ({f['s']:.1f}) | {s['cpu']:.1f} ({s['s']:.1f}) | "
                     f"{w['cpu']:.1f} ({w['s']:.1f}) | {f['cpu'] / w['cpu']:.0%} |")
        print(lines[-1], flush=True)
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
