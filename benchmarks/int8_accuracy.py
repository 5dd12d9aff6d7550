"""How close --dtype int8 (and bf16, for scale) stays to float32 on the bundled demo model:
over the 20 demo prompts, the share of identical greedy tokens, of identical continuations,
and the largest logit error (perf/accuracy.py). Writes a markdown table.

    python benchmarks/int8_accuracy.py --new 32 --out benchmarks/results-int8-accuracy.md

Speed is benchmarks/standard.py's: `--recipes greedy --dtypes fp32,int8 --threads 1 --clock cpu`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import decode
from decode.perf.accuracy import agreement

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_variants_diversity import PROMPTS  # noqa: E402  (the 20 demo prompts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--dtypes", default="int8,bf16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ref = decode.load(device="cpu")
    lines = [f"bundled demo model, the 20 demo prompts, greedy, {args.new} new tokens, against float32; "
             "logit error teacher-forced on float32's continuation", "",
             "| weights | identical tokens | identical continuations | max logit error | logit range |",
             "|---|---|---|---|---|"]
    for dt in args.dtypes.split(","):
        a = agreement(ref, decode.load(device="cpu", dtype=dt), PROMPTS, new=args.new)
        lines.append(f"| {dt} | {a['identical']:.3f} ({a['tokens']} tokens) | {a['whole']:.2f} | "
                     f"{a['max_logit_err']:.3f} | {a['logit_range']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
