"""The diversity variants against brute force: on a bigram table model (tests/table_model.py)
every continuation of every beam can be listed, so each variant is re-implemented here as
plain Python over lists (no tensors but the table) and must give the same sequences and
scores: `diverse` kind=hamming|cumulative|ngram, `siblings`, `iterative`. Then: they compose
with sampling stages (seeded, one compiled == eager), the checks say what is wrong, and
`decode explain` says what each penalises and by how much.
"""
from __future__ import annotations

import math

import pytest
import torch

import decode
from table_model import TableModel

V, EOS, PROMPT = 7, 6, [0, 2]


def table_model(seed: int, eos_boost: float = 0.8) -> TableModel:
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V, V, generator=g) * 1.5
    table[:, EOS] += eos_boost  # some beams end early
    return TableModel(table, eos=EOS)


def logprobs(model: TableModel, last: int) -> list[float]:
    return torch.log_softmax(model.table[last].double(), -1).tolist()


# -- the plain references ---------------------------------------------------------------------

def group_beam(model, k, groups, max_new, penalty):
    """Diverse (group) beam search, written out. `penalty(g, t, hist, v, past)` is what the
    continuation hist + [v] of group g loses at step t; `past` has, per group, its rows after
    each step (`rows`), its choices per step while searching (`picks`), whether it was done
    before the step (`done_before`) and the step count it stopped at (`until`)."""
    s = k // groups
    beams = [[([], 0.0)] for _ in range(groups)]   # per group: (new tokens, score); one live beam
    pools = [[] for _ in range(groups)]            # per group: (score / length, ids)
    done = [False] * groups
    past = {"rows": [[[] for _ in range(s)] for _ in range(groups)], "picks": [[] for _ in range(groups)],
            "until": [math.inf] * groups, "done_before": done}
    for t in range(max_new):
        past["done_before"] = list(done)
        past["chosen"] = []
        for g in range(groups):
            if done[g]:  # writes padding (EOS here), which counts for kind=hamming
                past["chosen"] += [EOS] * s
                past["rows"][g] = [r + [EOS] for r in past["rows"][g]]
                continue
            cands = []
            for j, (hist, score) in enumerate(beams[g]):
                lp = logprobs(model, (PROMPT + hist)[-1])
                cands += [(score + lp[v] - penalty(g, t, hist, v, past), j, v) for v in range(V)]
            top = sorted(cands, key=lambda c: -c[0])[:2 * s]
            for rank, (score, j, v) in enumerate(top):
                if v == EOS and rank < s:
                    pools[g].append((score / (t + 1), beams[g][j][0] + [v]))
            pools[g] = sorted(pools[g], key=lambda h: -h[0])[:s]
            going = [c for c in top if c[2] != EOS][:s]
            beams[g] = [(beams[g][j][0] + [v], score) for score, j, v in going]
            past["rows"][g] = [h for h, _ in beams[g]]
            past["chosen"] += [v for _, _, v in going]
            past["picks"][g].append([v for _, _, v in going])
            best = max(c[0] for c in top)
            if len(pools[g]) == s and pools[g][-1][0] >= best / (t + 1):
                done[g] = True
                past["until"][g] = t + 1
    results = []
    for g in range(groups):
        hyps = list(pools[g])
        if not done[g]:  # still searching at the end: the running beams compete for the pool
            for hist, score in beams[g]:
                if len(hyps) < s or score / max_new > min(h[0] for h in hyps):
                    hyps = sorted(hyps + [(score / max_new, hist)], key=lambda h: -h[0])[:s]
        results += hyps
    return sorted(results, key=lambda h: -h[0])[:k]


def hamming(lam):
    return lambda g, t, hist, v, past: lam * past["chosen"].count(v)


def cumulative(lam):
    def pen(g, t, hist, v, past):
        return lam * sum(step.count(v) for e in range(g) for step in past["picks"][e])
    return pen


def ngram(lam, n):
    def pen(g, t, hist, v, past):
        if len(hist) < n - 1:
            return 0.0
        gram = (hist[len(hist) - (n - 1):] if n > 1 else []) + [v]
        count = 0
        for e in range(g):
            for row in past["rows"][e]:
                for i in range(len(row) - n + 1):
                    if i + n - 1 < past["until"][e] and row[i:i + n] == gram:
                        count += 1
        return lam * count
    return pen


def iterative(distance):
    def pen(g, t, hist, v, past):
        cand = hist + [v]
        need = min(distance, len(cand))
        for e in range(g):
            if past["done_before"][e]:
                continue
            for row in past["rows"][e]:
                if sum(a != b for a, b in zip(cand, row)) < need:
                    return 1e9
        return 0.0
    return pen


def sibling_beam(model, k, max_new, gamma):
    """Beam search (early=false, lenpen 1) where each beam's r-th best child loses gamma·(r-1)."""
    beams, pool, open_ = [([], 0.0)], [], True
    for t in range(max_new):
        cands = []
        for hist, score in beams:
            lp = logprobs(model, (PROMPT + hist)[-1])
            ranked = sorted(range(V), key=lambda v: -lp[v])
            cands += [(score + lp[v] - gamma * r, hist + [v]) for r, v in enumerate(ranked)]
        top = sorted(cands, key=lambda c: -c[0])[:2 * k]
        ends = [c[1][-1] == EOS or t + 1 == max_new for c in top]
        if open_:
            pool += [(score / (t + 1), ids) for i, (score, ids) in enumerate(top) if ends[i] and i < k]
            pool = sorted(pool, key=lambda h: -h[0])[:k]
        beams = [(ids, score) for (score, ids), e in zip(top, ends) if not e][:k]
        if beams and len(pool) == k:
            open_ = open_ and beams[0][1] / (t + 1) > pool[-1][0]
    return pool


# -- the tests ---------------------------------------------------------------------------------

def ours(model, recipe):
    out = decode.generate(model, recipe, [PROMPT], compile=False)[0]
    return [(s.score, s.ids) for s in out.sequences]


def assert_same(got, want, recipe):
    assert [ids for _, ids in got] == [ids for _, ids in want], f"{recipe}: {got} vs {want}"
    for (a, _), (b, _) in zip(got, want):
        assert a == pytest.approx(b, abs=1e-4)


CASES = [
    ("diverse groups=2 penalty=0.7", hamming(0.7)),
    ("diverse groups=3 penalty=1.5", hamming(1.5)),
    ("diverse groups=2 penalty=0.7 kind=cumulative", cumulative(0.7)),
    ("diverse groups=3 penalty=0.4 kind=cumulative", cumulative(0.4)),
    ("diverse groups=2 penalty=2.0 kind=ngram", ngram(2.0, 2)),
    ("diverse groups=3 penalty=1.0 kind=ngram n=1", ngram(1.0, 1)),
    ("diverse groups=2 penalty=3.0 kind=ngram n=3", ngram(3.0, 3)),
    ("iterative groups=2 distance=1", iterative(1)),
    ("iterative groups=3 distance=2", iterative(2)),
    ("iterative groups=2 distance=3", iterative(3)),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clause,penalty", CASES, ids=[c for c, _ in CASES])
def test_group_variant_matches_the_plain_reference(clause, penalty, seed):
    model = table_model(seed)
    groups = int(clause.split("groups=")[1].split()[0])
    k, max_new = 2 * groups, 5
    recipe = f"beam {k} | {clause} | max {max_new}"
    assert_same(ours(model, recipe), group_beam(model, k, groups, max_new, penalty), recipe)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k,gamma", [(2, 0.5), (3, 1.0), (3, 0.0)])
def test_siblings_matches_the_plain_reference(k, gamma, seed):
    model = table_model(seed)
    recipe = f"beam {k} | siblings {gamma} | max 5"
    assert_same(ours(model, recipe), sibling_beam(model, k, 5, gamma), recipe)


def test_the_references_can_tell_the_variants_apart():
    """Each variant changes the result somewhere on these tables (a test that cannot fail is
    a bug): against kind=hamming for the group kinds, against plain beam for siblings."""
    for clause, penalty in CASES:
        groups = int(clause.split("groups=")[1].split()[0])
        k = 2 * groups
        outs = [group_beam(table_model(s), k, groups, 5, penalty) for s in range(3)]
        plain = [group_beam(table_model(s), k, groups, 5, lambda *a: 0.0) for s in range(3)]
        assert outs != plain, clause
    sib = [sibling_beam(table_model(s), 3, 5, 1.0) for s in range(4)]
    assert sib != [sibling_beam(table_model(s), 3, 5, 0.0) for s in range(4)]
    assert ours(table_model(0), "beam 3 | siblings 0 | max 5") == ours(table_model(0), "beam 3 | max 5")


SAMPLED = ["beam 4 | diverse groups=2 penalty=1.0 kind=cumulative | topk 3 temp 0.8 | max 6",
           "beam 4 | diverse groups=2 penalty=1.0 kind=ngram n=2 | topp 0.9 | max 6",
           "beam 4 | siblings 0.5 | topk 4 | max 6",
           "beam 4 | iterative groups=2 distance=2 | temp 0.9 | max 6"]


@pytest.mark.parametrize("recipe", SAMPLED)
def test_variant_composes_with_sampling_and_repeats_with_its_seed(recipe):
    model = table_model(4, eos_boost=-2.0)
    assert decode.parse(recipe).sampling
    runs = [[[s.ids for s in c.sequences] for c in decode.generate(model, recipe, [PROMPT] * 3, seed=seed,
                                                                    compile=False)] for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert all(len(seqs) == 4 for seqs in runs[0])


@pytest.mark.parametrize("kind", ["hamming", "cumulative", "ngram n=1"])
def test_a_huge_penalty_makes_groups_start_differently_even_under_topk_1(kind):
    """The penalty comes before the stages: after `topk 1` every group would see one token."""
    out = decode.generate(table_model(0, eos_boost=-2.0),
                          f"beam 4 | diverse groups=2 penalty=100 kind={kind} | topk 1 | max 3",
                          [PROMPT], compile=False, seed=0)[0]
    assert len({s.ids[0] for s in out.sequences}) == 2


@pytest.mark.parametrize("recipe", ["beam 4 | diverse groups=2 penalty=0.8 kind=ngram n=2 | max 5",
                                    pytest.param("beam 4 | siblings 0.7 | max 5", marks=pytest.mark.slow),
                                    pytest.param("beam 4 | diverse groups=2 penalty=0.8 kind=cumulative | topk 3 | max 5",
                                                 marks=pytest.mark.slow),
                                    pytest.param("beam 6 | iterative groups=3 | max 5", marks=pytest.mark.slow)])
def test_compiled_variant_gives_the_eager_tokens(recipe):
    model = table_model(2)
    prompts = [PROMPT, [1, 3, 4]]
    eager = decode.generate(model, recipe, prompts, compile=False, seed=3)
    compiled = decode.generate(model, recipe, prompts, compile=True, seed=3)
    assert [[s.ids for s in c.sequences] for c in compiled] == [[s.ids for s in c.sequences] for c in eager]


@pytest.mark.parametrize("recipe,message", [
    ("greedy | siblings 0.5", "'siblings' needs a 'beam K' search"),
    ("beam 4 | siblings 0.5 | diverse groups=2", "both change how a beam search chooses"),
    ("beam 6 | iterative groups=4", "groups=4 does not divide the beam width 6"),
    ("beam 4 | diverse groups=2 penalty=1 n=3", "n= is the n-gram size of kind=ngram"),
    ("beam 4 | diverse groups=2 penalty=1 kind=jaccard", "must be one of hamming, cumulative, ngram"),
])
def test_variant_mistakes_are_reported_in_words(recipe, message):
    with pytest.raises(decode.RecipeError, match=message):
        decode.parse(recipe)


def test_only_hamming_has_a_transformers_equivalent():
    from decode.dsl.reference import hf_reference

    assert hf_reference("beam 4 | diverse groups=2 penalty=0.5").kwargs["num_beam_groups"] == 2
    for r in ("beam 4 | diverse groups=2 penalty=0.5 kind=cumulative", "beam 4 | siblings 0.5",
              "beam 4 | iterative groups=2"):
        assert hf_reference(r).kwargs is None


@pytest.mark.parametrize("recipe,words", [
    ("beam 4 | diverse groups=2 penalty=0.5", ["2 groups", "loses 0.5", "at this same step"]),
    ("beam 4 | diverse groups=2 penalty=0.3 kind=cumulative", ["loses 0.3", "at any step so far"]),
    ("beam 4 | diverse groups=2 penalty=2 kind=ngram n=3", ["loses 2.0", "3-gram"]),
    ("beam 4 | siblings 0.25", ["r-th best loses 0.25·(r-1)", "0.0, 0.25, 0.5"]),
    ("beam 8 | iterative groups=4 distance=3", ["4 groups", "fewer than min(3, its length)", "dropped"]),
])
def test_explain_says_what_each_variant_penalises_and_by_how_much(recipe, words, capsys):
    from decode.cli import main

    assert main(["explain", recipe]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for w in words:
        assert w in out, (w, out)
