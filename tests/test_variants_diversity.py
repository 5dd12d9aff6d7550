"""Each diversity variant returns more varied sequences than plain beam search: on 20 prompts
of the bundled demo model, distinct-2 (unique bigrams / all bigrams over a prompt's returned
sequences, averaged over prompts) is higher for every variant than for `beam 4`, and for
diverse beam sampling than for beam sampling (fixed seed).

    python tests/test_variants_diversity.py 32    # the table, 32 new tokens
"""
from __future__ import annotations

import sys

import pytest

import decode

PROMPTS = ["ROMEO:", "JULIET:", "HAMLET:", "KING LEAR:", "First Citizen:", "MACBETH:", "LADY MACBETH:",
           "OTHELLO:", "IAGO:", "PORTIA:", "To be, or not to be", "Now is the winter of our discontent",
           "Friends, Romans, countrymen", "All the world's a stage", "What light through yonder window",
           "Once more unto the breach", "The quality of mercy", "If music be the food of love",
           "Shall I compare thee", "O Romeo, Romeo"]
PLAIN = "beam 4"
VARIANTS = ["beam 4 | diverse groups=2 penalty=1.0",
            "beam 4 | diverse groups=2 penalty=1.0 kind=cumulative",
            "beam 4 | diverse groups=2 penalty=1.0 kind=ngram",
            "beam 4 | siblings 1.0",
            "beam 4 | iterative groups=2 distance=2",
            "beam 4 | capped 2",
            "beam 4 | determinantal weight=2",
            "beam 4 | diverse groups=2 penalty=1.0 kind=embedding",
            "beam 4 | cluster 4",
            "beam 4 | npad sigma=1.0"]
SAMPLED = "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7"  # the design card's example
SAMPLED_PLAIN = "beam 4 | topp 0.9 temp 0.7"
MAX_NEW = 8


def distinct2(seqs: list[list[int]]) -> float:
    grams = [tuple(s[i:i + 2]) for s in seqs for i in range(len(s) - 1)]
    return len(set(grams)) / max(1, len(grams))


def mean_distinct2(model, recipe: str, max_new: int) -> float:
    outs = decode.generate(model, f"{recipe} | max {max_new}", PROMPTS, seed=0, compile=False)
    return sum(distinct2([s.ids for s in c.sequences]) for c in outs) / len(outs)


@pytest.fixture(scope="module")
def demo():
    return decode.load()


@pytest.fixture(scope="module")
def plain(demo):
    return mean_distinct2(demo, PLAIN, MAX_NEW)


@pytest.mark.parametrize("recipe", VARIANTS)
def test_variant_is_more_diverse_than_plain_beam_search(demo, plain, recipe):
    d = mean_distinct2(demo, recipe, MAX_NEW)
    assert d > plain + 0.02, f"{recipe}: distinct-2 {d:.3f} vs beam 4 {plain:.3f}"


def test_diverse_beam_sampling_is_more_diverse_than_beam_sampling_and_plain_beam(demo, plain):
    d = mean_distinct2(demo, SAMPLED, MAX_NEW)
    assert d > plain + 0.02 and d > mean_distinct2(demo, SAMPLED_PLAIN, MAX_NEW) + 0.02


def test_arithmetic_sampling_is_more_diverse_than_independent_samples(demo):
    d, iid = mean_distinct2(demo, "arith 4", MAX_NEW), mean_distinct2(demo, "sample 4", MAX_NEW)
    assert d > iid + 0.01, f"arith 4: distinct-2 {d:.3f} vs sample 4 {iid:.3f}"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    m = decode.load()
    print(f"distinct-2 over the 4 returned sequences, mean of {len(PROMPTS)} prompts, max {n}, seed 0\n")
    print("| recipe | distinct-2 |\n|---|---|")
    for r in [PLAIN, *VARIANTS, SAMPLED_PLAIN, SAMPLED, "sample 4", "arith 4", "sbeam 4", "cpsbs 4"]:
        print(f"| `{r}` | {mean_distinct2(m, r, n):.3f} |")
