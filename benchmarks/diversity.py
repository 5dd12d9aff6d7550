"""The README's table of diversity methods (issue 23): every method on the demo model, the 20
prompts of tests/test_variants_diversity.py, 32 new tokens, seed 0, compiled, all prompts in
one batch. Per recipe, over each prompt's returned sequences, averaged over the prompts:

- distinct-2: distinct token bigrams / all bigrams of the set (higher: more diverse);
- self-BLEU: each sequence's sacrebleu sentence BLEU against the others of its set, averaged
  (lower: more diverse);
- log-prob: each returned sequence's log-probability under the model (the raw model, after the
  prompt; not the search's score, which penalties, noise or length normalisation change),
  averaged over all sequences;
- ms/step: loop time / steps of the second of two runs (the first compiles).

    python benchmarks/diversity.py            # print the table
    python benchmarks/diversity.py --write    # and write it into README.md between the markers
    python benchmarks/diversity.py --write --resume out.txt   # keep the rows a stopped run printed
    python benchmarks/diversity.py --write --only "beam 4 | npad sigma=1.0"   # re-measure one row,
                                                  # keep README.md's others (--only may repeat)

Needs sacrebleu (`pip install -e .[bench]`).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

import decode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_variants_diversity import PROMPTS, distinct2  # noqa: E402  (the 20 prompts the tests use)

MAX_NEW, SEED = 32, 0
BASELINES = ["beam 4", "sample 4", "sbeam 4"]
METHODS = [  # the twelve, with the baseline each is measured against
    ("beam 4 | diverse groups=2 penalty=1.0", "beam 4"),
    ("beam 4 | diverse groups=2 penalty=1.0 kind=cumulative", "beam 4"),
    ("beam 4 | diverse groups=2 penalty=1.0 kind=ngram", "beam 4"),
    ("beam 4 | diverse groups=2 penalty=1.0 kind=embedding", "beam 4"),
    ("beam 4 | siblings 1.0", "beam 4"),
    ("beam 4 | iterative groups=2 distance=2", "beam 4"),
    ("beam 4 | capped 2", "beam 4"),
    ("beam 4 | determinantal weight=2", "beam 4"),
    ("beam 4 | cluster 4", "beam 4"),
    ("beam 4 | npad sigma=1.0", "beam 4"),
    ("arith 4", "sample 4"),
    ("cpsbs 4", "sbeam 4"),
]
START, END = "<!-- diversity-table:start -->", "<!-- diversity-table:end -->"
HEADER = ["| recipe | against | distinct-2 | self-BLEU | log-prob | ms/step |", "|---|---|---|---|---|---|"]
ROW = re.compile(r"^\| `[^`]+` \| (`[^`]+`|) \| \d\.\d{3} \| \d+\.\d \| -?\d+\.\d{2} \| \d+\.\d{2} \|$")


def self_bleu(texts: list[str]) -> float:
    import sacrebleu

    scores = [sacrebleu.sentence_bleu(t, [o for j, o in enumerate(texts) if j != i]).score
              for i, t in enumerate(texts)]
    return sum(scores) / len(scores) if scores else 0.0


def log_prob(model, prompt: list[int], ids: list[int]) -> float:
    """log p(ids | prompt) under the model itself."""
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([prompt + ids]))[0, len(prompt) - 1:-1].double(), -1)
    return float(lp.gather(1, torch.tensor(ids)[:, None]).sum()) if ids else 0.0


def measure(model, recipe: str) -> tuple[float, float, float, float]:
    """(distinct-2, self-BLEU, mean log-prob, ms/step) of `recipe` over PROMPTS."""
    r = f"{recipe} | max {MAX_NEW}"
    decode.generate(model, r, PROMPTS, seed=SEED)  # compiles
    t: dict = {}
    outs = decode.generate(model, r, PROMPTS, seed=SEED, timings=t)
    d2 = sum(distinct2([s.ids for s in c.sequences]) for c in outs) / len(outs)
    bleu = sum(self_bleu([s.text for s in c.sequences]) for c in outs) / len(outs)
    lps = [log_prob(model, c.prompt_ids, s.ids) for c in outs for s in c.sequences]
    return d2, bleu, sum(lps) / len(lps), 1000 * t["loop_s"] / t["steps"]


def row(recipe: str, against: str, numbers: tuple[float, float, float, float]) -> str:
    d2, bleu, lp, ms = numbers
    vs = f"`{against}`" if against else ""
    return f"| `{recipe.replace('|', chr(92) + '|')}` | {vs.replace('|', chr(92) + '|')} | {d2:.3f} | {bleu:.1f} | {lp:.2f} | {ms:.2f} |"


def first_cell(recipe: str) -> str:
    """A row's first cell, `recipe` as the table spells it: what keeps a row measured before."""
    return row(recipe, "", (0.0, 0.0, 0.0, 0.0)).split(" | ")[0]


def table(model, done: dict[str, str] | None = None) -> list[str]:
    """The table's lines; `done` (a row's first cell -> the row) keeps rows measured before."""
    lines = list(HEADER)
    for recipe, against in [(b, "") for b in BASELINES] + METHODS:
        lines.append((done or {}).get(first_cell(recipe)) or row(recipe, against, measure(model, recipe)))
        print(lines[-1], flush=True)
    return lines


def written(readme: Path) -> dict[str, str]:
    """The rows of the table in `readme` (a row's first cell -> the row)."""
    text = readme.read_text()
    body = text[text.index(START) + len(START):text.index(END)]
    return {x.split(" | ")[0]: x for x in body.splitlines() if ROW.match(x)}


def write(readme: Path, lines: list[str]) -> None:
    text = readme.read_text()
    a, b = text.index(START) + len(START), text.index(END)
    readme.write_text(text[:a] + "\n" + "\n".join(lines) + "\n" + text[b:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    ap.add_argument("--resume", metavar="FILE", help="keep the rows of an earlier run's output (a stopped run)")
    ap.add_argument("--only", metavar="RECIPE", action="append",
                    help="re-measure only this row (repeatable); the others are kept from README.md's table")
    args = ap.parse_args()
    done = {}
    if args.only:
        known = BASELINES + [m for m, _ in METHODS]
        unknown = [r for r in args.only if r not in known]
        if unknown:
            ap.error(f"--only {unknown[0]!r} is not a row of the table; the rows are: " + "; ".join(known))
        fresh = {first_cell(r) for r in args.only}
        done = {k: v for k, v in written(ROOT / "README.md").items() if k not in fresh}
    if args.resume:
        done.update({x.split(" | ")[0]: x for x in Path(args.resume).read_text().splitlines() if ROW.match(x)})
    lines = table(decode.load(), done)
    if args.write:
        write(ROOT / "README.md", lines)


if __name__ == "__main__":
    main()
