"""What one logit stage adds to a step: `sample | <stage> | topp 0.9` over `sample | topp 0.9`,
at batch 1, all runs interleaved in one process (a shared machine's slow phases hit them alike).

    python benchmarks/stages.py --threads 1 --clock cpu
    python benchmarks/stages.py --stages dry,xtc --repeats 30

Each stage of issue 18 is held to at most 5% over the baseline (the ratio column). Add a
stage by adding its row to STAGES.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import decode
from decode.perf.bench import Case, random_model

BASELINE = "sample | topp 0.9"
STAGES = {  # name -> the stage as written between `sample` and `topp 0.9`
    "dry": "dry",
    "xtc": "xtc threshold=0.1 probability=0.5",
    "dynatemp": "dynatemp 0.8 range=0.5",
    "mirostat1": "mirostat1 tau=5",
    "repetition last=64": "repetition 1.1 last=64",
    "frequency last=64": "frequency 0.2 last=64",
}
TARGET = 1.05


class _EncodeOnly:
    """The demo tokenizer's encode, for text arguments, on a model of a larger vocabulary
    (whose ids it cannot decode: the outputs' text is left empty)."""

    def __init__(self, tokenizer):
        self.encode = tokenizer.encode

    def decode(self, ids) -> str:
        return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_model(args.shape)
    model.tokenizer = _EncodeOnly(decode.load().tokenizer)  # dry's breakers are text
    recipes = {"baseline": BASELINE}
    recipes.update({n: f"sample | {STAGES.get(n, n)} | topp 0.9" for n in args.stages.split(",")})
    cases = {n: Case(r, model, new=args.new, clock=args.clock) for n, r in recipes.items()}
    for rep in range(args.repeats):
        for case in cases.values():
            case.run_once()
        print(f"round {rep + 1}/{args.repeats}: " + ", ".join(
            f"{n} {c.best * 1e3:.3f}" for n, c in cases.items()), flush=True)
    base = cases["baseline"].best
    lines = [f"shape {args.shape}, batch 1, {args.new} new tokens, {torch.get_num_threads()} threads, "
             f"{args.clock} clock, best of {args.repeats} interleaved runs, {time.strftime('%Y-%m-%d')}", "",
             "| recipe | ms/step | over `sample \\| topp 0.9` | target |", "|---|---|---|---|"]
    for name, case in cases.items():
        ratio = case.best / base
        lines.append(f"| `{recipes[name].replace('|', chr(92) + '|')}` | {case.best * 1e3:.3f} | "
                     f"{ratio:.3f} | {'–' if name == 'baseline' else f'≤ {TARGET}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
