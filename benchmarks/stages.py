"""What each logit stage adds to the step: `sample | <stage> | topp 0.9` over
`sample | topp 0.9`, batch 1, in one process: every case is compiled first, then the timed
runs are interleaved round robin (a shared machine's slow phases hit them all alike) and
the best of each is kept. Issue 18's target: each stage adds at most 5% (ratio <= 1.05).
Not a test: read the ratios.

    python benchmarks/stages.py --threads 1 --clock cpu
    python benchmarks/stages.py --stages minnew,force_eos --shape 110m
    python benchmarks/stages.py --only dry,mirostat1 --threads 1 --clock cpu --repeats 30

`--only` (or `--stages`) times a subset, against the same base in the same run.

A new stage is one more entry in STAGES: its name -> the clause as a recipe writes it.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import decode
from decode.perf.bench import Case, random_model

BASE = "sample | topp 0.9"
TARGET = 1.05

STAGES = {
    # issue 18, from transformers' generate
    "minlen": "minlen 24",
    "minnew": "minnew 24",
    "suppress": "suppress 5 17 99 1000 31999",
    "suppress_at_start": "suppress_at_start 5 17",
    "force_bos": "force_bos 5",
    "force_eos": "force_eos",
    "lengthdecay": "lengthdecay start=16 factor=1.05",
    "renormalize": "renormalize",
    "watermark": "watermark",
    # issue 18, from llama.cpp
    "dry": "dry",
    "xtc": "xtc threshold=0.1 probability=0.5",
    "dynatemp": "dynatemp 0.8 range=0.5",
    "mirostat1": "mirostat1 tau=5",
    "repetition last=64": "repetition 1.1 last=64",
    "frequency last=64": "frequency 0.2 last=64",
}


class _EncodeOnly:
    """The demo tokenizer's encode, for text arguments (dry's breakers), on a model of a
    larger vocabulary (whose ids it cannot decode: the outputs' text is left empty)."""

    def __init__(self, tokenizer):
        self.encode = tokenizer.encode

    def decode(self, ids) -> str:
        return ""


def with_stage(clause: str) -> str:
    """The recipe that times `clause`: the base with the stage before its truncation."""
    return f"sample | {clause} | topp 0.9"


def cell(text: str) -> str:
    """`text` as code in a markdown table cell (its pipes escaped)."""
    return "`" + text.replace("|", "\\|") + "`"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--new", type=int, default=64, help="new tokens per timed run")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per case, interleaved; best is kept")
    ap.add_argument("--stages", "--only", default=",".join(STAGES),
                    help="comma-separated names from STAGES (default: all)")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="cpu: this thread's CPU time (use with --threads 1 on a shared machine)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.stages.split(",") if n]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        ap.error(f"unknown stage {unknown[0]!r}; STAGES has {', '.join(STAGES)}")
    model = random_model(args.shape)
    model.tokenizer = _EncodeOnly(decode.load().tokenizer)
    recipes = {"(none)": BASE, **{n: with_stage(STAGES[n]) for n in names}}
    cases = {}
    for name, recipe in recipes.items():
        cases[name] = Case(recipe, model, batch=1, new=args.new, clock=args.clock)
        print(f"compiled {recipe}: {cases[name].compile_s:.1f} s", flush=True)
    for rep in range(args.repeats):
        for case in cases.values():
            case.run_once()
        print(f"round {rep + 1}/{args.repeats}", flush=True)
    base = cases["(none)"].best
    lines = [f"shape {args.shape}, batch 1, {args.new} new tokens, {torch.get_num_threads()} threads, "
             f"{args.clock} clock, best of {args.repeats} runs interleaved, {time.strftime('%Y-%m-%d')}", "",
             f"| stage | recipe | ms/step | over {cell(BASE)} | within {TARGET:.2f} |",
             "|---|---|---|---|---|"]
    for name, case in cases.items():
        ratio = case.best / base
        lines.append(f"| {name} | {cell(recipes[name])} | {case.best * 1e3:.3f} | {ratio:.3f} | "
                     f"{'yes' if ratio <= TARGET else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
