"""Issue 23's diversity methods against brute force on a bigram table model small enough to
list every continuation (tests/table_model.py): each is written out here as plain Python over
lists and must give the same sequences and scores (the deterministic ones) or the same
distribution (the sampling ones). Then: compiled == eager with one shared graph per structure,
the numbers are tensors (a sweep does not recompile), each method's file stays within 30
lines of code, and bad input is one message with the clause's position.
"""
from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import decode
from table_model import TableModel, chi_square, inclusion_probs, sequence_probs, step_probs
from test_variants import EOS, PROMPT, V, assert_same, logprobs, ours, table_model

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["capped", "arith", "determinantal", "cpsbs", "cluster", "npad"]
ALPHA = 1e-3


def plain_beam(model, k, max_new, keep, lp_of=None):
    """Beam search (early=false, lenpen 1) whose candidates each step are `keep(cands)`, a list
    of (score, ids, parent) in the order they compete; the first k that do not end go on.
    `lp_of(t, j, hist)`: beam j's next-token log-probs (default: the model's)."""
    beams, pool, open_ = [([], 0.0)], [], True
    for t in range(max_new):
        cands = []
        for j, (hist, score) in enumerate(beams):
            lp = logprobs(model, (PROMPT + hist)[-1]) if lp_of is None else lp_of(t, j, hist)
            cands += [(score + lp[v], hist + [v], j, lp[v]) for v in range(V)]
        top = keep(t, cands)[:2 * k]
        top = [c for c in top if c[0] > -math.inf]
        ends = [c[1][-1] == EOS or t + 1 == max_new for c in top]
        if open_:
            pool += [(c[0] / (t + 1), c[1]) for i, c in enumerate(top) if ends[i] and i < k]
            pool = sorted(pool, key=lambda h: -h[0])[:k]
        beams = [(c[1], c[0]) for c, e in zip(top, ends) if not e][:k]
        if beams and len(pool) == k:
            open_ = open_ and max(s for _, s in beams) / (t + 1) > pool[-1][0]
    return pool


def capped(g):
    def keep(t, cands):
        out = []
        for j in {c[2] for c in cands}:
            mine = sorted([c for c in cands if c[2] == j], key=lambda c: (-c[3], c[1][-1]))
            out += mine[:g]
        return sorted(out, key=lambda c: -c[0])
    return keep


# -- capped ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k,g", [(2, 1), (3, 2), (4, 1), (3, 7)])
def test_capped_matches_the_plain_reference(k, g, seed):
    model = table_model(seed)
    recipe = f"beam {k} | capped {g} | max 5"
    assert_same(ours(model, recipe), plain_beam(model, k, 5, capped(g)), recipe)


def test_capped_reference_can_tell_it_from_beam_search():
    uncapped = lambda t, c: sorted(c, key=lambda x: -x[0])  # noqa: E731
    assert any(plain_beam(table_model(s), 3, 5, capped(1)) != plain_beam(table_model(s), 3, 5, uncapped)
               for s in range(3))
    assert ours(table_model(0), f"beam 3 | capped {V} | max 5") == ours(table_model(0), "beam 3 | max 5")


# -- determinantal ------------------------------------------------------------------------

def grams(ids, n):
    out = {}
    for i in range(len(ids) - n + 1):
        out[tuple(ids[i:i + n])] = out.get(tuple(ids[i:i + n]), 0) + 1
    return out


def similarity(a, b, n):
    ga, gb = grams(a, n), grams(b, n)
    if not ga or not gb:
        return float(a == b)
    dot = sum(c * gb.get(g, 0) for g, c in ga.items())
    return dot / math.sqrt(sum(c * c for c in ga.values()) * sum(c * c for c in gb.values()))


def determinantal(k, w, n):
    """The pool: the 2k² best; then 2k times, the one with the largest score + w·log of the
    factor det(S) grows by (numpy determinants) joins."""
    def keep(t, cands):
        pool = sorted(cands, key=lambda c: -c[0])[:2 * k * k]
        pool = [c for c in pool if c[0] > -math.inf] + [c for c in pool if c[0] == -math.inf]
        sim = np.array([[similarity(a[1], b[1], n) for b in pool] for a in pool])
        chosen = []
        for _ in range(min(2 * k, len(pool))):
            base = np.linalg.det(sim[np.ix_(chosen, chosen)]) if chosen else 1.0
            best, arg = -math.inf, None
            for i, c in enumerate(pool):
                if i in chosen:
                    continue
                grow = np.linalg.det(sim[np.ix_(chosen + [i], chosen + [i])]) / base
                gain = c[0] + w * math.log(max(grow, 1e-30)) if c[0] > -math.inf else -1e30
                if gain > best:
                    best, arg = gain, i
            chosen.append(arg)
        return [pool[i] for i in chosen]
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k,w,n", [(2, 1.0, 1), (2, 3.0, 2), (3, 0.5, 2), (3, 2.0, 1)])
def test_determinantal_matches_the_plain_reference(k, w, n, seed):
    model = table_model(seed)
    recipe = f"beam {k} | determinantal weight={w} n={n} | max 5"
    assert_same(ours(model, recipe), plain_beam(model, k, 5, determinantal(k, w, n)), recipe)


def test_determinantal_weight_0_is_beam_search_and_the_reference_can_tell():
    assert ours(table_model(1), "beam 3 | determinantal weight=0 | max 5") == ours(table_model(1), "beam 3 | max 5")
    best = lambda t, c: sorted(c, key=lambda x: -x[0])  # noqa: E731
    assert any(plain_beam(table_model(s), 3, 5, determinantal(3, 2.0, 1)) != plain_beam(table_model(s), 3, 5, best)
               for s in range(3))


# -- arith ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arith_runs():
    """3000 prompts' `arith 3` sets on a 5-token table (each prompt its own seed), and the
    sequence distribution they must each follow."""
    model = TableModel.random(7, size=5)
    recipe = "topk 4 | temp 0.9"
    out = decode.generate(model, f"arith 3 | {recipe} | max 3", [[0, 1]] * 3000, seed=11, compile=False)
    return model, [[tuple(s.ids) for s in c.sequences] for c in out], sequence_probs(model, recipe, [0, 1], 3)


@pytest.mark.parametrize("row", [0, 1, 2])
def test_arith_each_sample_is_distributed_as_ancestral_sampling(arith_runs, row):
    _, sets, probs = arith_runs
    counts = {}
    for s in sets:
        counts[s[row]] = counts.get(s[row], 0) + 1
    stat, p, df = chi_square(counts, probs, len(sets))
    assert p > ALPHA, f"row {row}: chi-square {stat:.1f} on {df} df, p = {p:.2e}"


def test_arith_rows_split_the_first_step_by_the_lattice(arith_runs):
    """3 evenly spaced codes: a first token of probability P is taken by floor(3P) or ceil(3P)
    rows of every set, which independent samples would not do."""
    model, sets, probs = arith_runs
    first = {}
    for seq, p in probs.items():
        first[seq[0]] = first.get(seq[0], 0.0) + p
    for s in sets:
        for tok, p in first.items():
            assert math.floor(3 * p) <= sum(x[0] == tok for x in s) <= math.ceil(3 * p), (s, tok, p)
    iid = decode.generate(model, "sample 3 | topk 4 | temp 0.9 | max 3", [[0, 1]] * 300, seed=11, compile=False)
    assert any(not all(math.floor(3 * p) <= sum(x.ids[0] == tok for x in c.sequences) <= math.ceil(3 * p)
                       for tok, p in first.items()) for c in iid)


def test_arith_sets_repeat_themselves_less_than_independent_samples(arith_runs):
    _, sets, _ = arith_runs
    model = arith_runs[0]
    iid = decode.generate(model, "sample 3 | topk 4 | temp 0.9 | max 3", [[0, 1]] * 3000, seed=11, compile=False)
    dup = sum(len(set(s)) < 3 for s in sets)
    dup_iid = sum(len({tuple(x.ids) for x in c.sequences}) < 3 for c in iid)
    assert dup < 0.8 * dup_iid, (dup, dup_iid)


# -- cpsbs -----------------------------------------------------------------------------------

def poisson_sets(probs: dict, k: int, normalise: bool = True) -> dict:
    """CPSBS's conditional Poisson design by brute force, with the weights of the authors' code
    (rycolab/cpsbs: a softmax over the candidates, then the odds): each candidate's sequence
    probability p normalised over all candidates, q = p / sum(p), weighs q/(1-q) (q at most
    0.99), and P(S) ∝ the product of its members' weights, |S| = k. `normalise=False`: the
    odds of p itself (what cpsbs once did), for tests that must tell the two apart."""
    items = [x for x, p in probs.items() if p > 0]
    total = sum(probs.values()) if normalise else 1.0
    odds = {x: min(p / total, 0.99) / (1 - min(p / total, 0.99)) for x, p in probs.items()}
    sets = {frozenset(c): math.prod(odds[x] for x in c) for c in itertools.combinations(items, min(k, len(items)))}
    z = sum(sets.values())
    return {c: p / z for c, p in sets.items()}


def cpsbs_children(model, recipe, max_new):
    """children(seq, p): the continuations of a beam (a finished one is its own only child)
    with their sequence probabilities under the processed distribution, after prompt [0, 1]."""
    eos = model.config.eos_ids[0]

    def children(seq, p):
        if seq and (seq[-1] == eos or len(seq) == max_new):
            return {seq: p}
        probs = step_probs(model, recipe, [0, 1] + list(seq), len(seq), True).tolist()
        return {seq + (v,): p * q for v, q in enumerate(probs) if q > 0}
    return children


def cpsbs_inclusion(model, recipe, k, max_new) -> dict:
    """P(sequence is among the k returned) after max_new steps, by enumerating every set."""
    children = cpsbs_children(model, recipe, max_new)

    seq_p, layer = {(): 1.0}, {frozenset([()]): 1.0}  # each sequence's probability; each set's
    for _ in range(max_new):
        nxt = {}
        for beams, p in layer.items():
            weights = {}
            for seq in beams:
                weights.update(children(seq, seq_p[seq]))
            seq_p.update(weights)
            for s, q in poisson_sets(weights, k).items():
                nxt[s] = nxt.get(s, 0.0) + p * q
        layer = nxt
    out = {}
    for beams, p in layer.items():
        for seq in beams:
            out[seq] = out.get(seq, 0.0) + p
    return out


@pytest.fixture(scope="module")
def cpsbs_runs():
    """4000 prompts' `cpsbs 2` sets over 2 steps of a 5-token table, and each sequence's
    inclusion probability by enumerating every set."""
    model = TableModel.random(5, size=5)
    recipe, k, runs = "temp 0.8", 2, 4000
    out = decode.generate(model, f"cpsbs {k} | {recipe} | max 2", [[0, 1]] * runs, seed=21, compile=False)
    return model, recipe, out, cpsbs_inclusion(model, recipe, k, 2)


def test_cpsbs_includes_each_sequence_with_the_designs_probability(cpsbs_runs):
    model, recipe, out, want = cpsbs_runs
    k, runs = 2, len(out)
    assert sum(want.values()) == pytest.approx(k)
    # the test can fail: plain `sbeam` (another design) lands elsewhere
    sb = decode.generate(model, f"sbeam {k} | {recipe} | max 2", [[0, 1]] * runs, seed=21, compile=False)
    other = {}
    for c in sb:
        for s in c.sequences:
            other[tuple(s.ids)] = other.get(tuple(s.ids), 0) + 1
    assert any(abs(other.get(q, 0) - runs * p) > 4.5 * math.sqrt(runs * p * (1 - p)) + 1 for q, p in want.items())


def test_cpsbs_inclusion_after_one_step_is_the_designs_exact_inclusion_probability():
    model = TableModel.random(5, size=5)
    probs = dict(enumerate(step_probs(model, "temp 0.8", [0, 1], 0, True).tolist()))
    exact = {(x,): sum(p for s, p in poisson_sets(probs, 3).items() if x in s) for x in probs}
    out = decode.generate(model, "cpsbs 3 | temp 0.8 | max 1", [[0, 1]] * 20, seed=2, compile=False)
    for c in out:
        for s in c.sequences:
            assert math.exp(s.inclusion) == pytest.approx(exact[tuple(s.ids)], rel=1e-6), s.ids  # float32 log-probs in
    assert "inclusion" in out[0].to_json()["sequences"][0]


def test_poisson_draw_gives_each_set_the_designs_probability():
    """_poisson.draw against the conditional Poisson design by enumeration: P(S) ∝ the product
    of its members' weights (an impossible item never drawn), and the inclusion
    probabilities it returns are the design's exactly. Successive sampling (each draw
    proportional to the weight among the rest, `sbeam`'s design) must be rejected."""
    from decode.compiler.search._poisson import draw

    logw = torch.tensor([0.9, -1.2, 0.3, -2.5, 0.0, float("-inf"), -0.6], dtype=torch.float64)
    w = {i: math.exp(x) for i, x in enumerate(logw.tolist()) if x > -math.inf}
    k, n = 3, 20000
    sets = {frozenset(c): math.prod(w[i] for i in c) for c in itertools.combinations(w, k)}
    z = sum(sets.values())
    exact = {s: p / z for s, p in sets.items()}
    incl = {i: sum(p for s, p in exact.items() if i in s) for i in w}
    u = torch.rand(n, k, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pos, log_incl = draw(logw.expand(n, -1), k, u)
    drawn = [frozenset(r) for r in pos.tolist()]
    counts = {s: drawn.count(s) for s in set(drawn)}
    assert chi_square(counts, exact, n)[1] > ALPHA
    for row, li in zip(pos[:50].tolist(), log_incl[:50].tolist()):
        assert [math.exp(x) for x in li] == pytest.approx([incl[i] for i in row], rel=1e-9)
    total = sum(w.values())
    successive = inclusion_probs({i: x / total for i, x in w.items()}, k)[0]
    assert chi_square(counts, successive, n)[1] < ALPHA  # the test can fail


def test_cpsbs_weighs_candidates_by_the_odds_of_their_normalised_probability(cpsbs_runs):
    """After two steps of `cpsbs 2`, a set whose sequences start differently came from beams
    known to be those two prefixes, so each sequence's `inclusion` is exactly the design's
    inclusion at step 1 times its inclusion among the beams' children at step 2, with the
    children's probabilities normalised before the odds (the authors' weights); the odds of
    the raw sequence probabilities give other numbers."""
    model, recipe, out, _ = cpsbs_runs
    children = cpsbs_children(model, recipe, 2)
    first = children((), 1.0)

    def included(probs, seq, normalise):
        return sum(p for s, p in poisson_sets(probs, 2, normalise).items() if seq in s)

    checked, raw_differs = 0, False
    for c in out[:300]:
        seqs = [tuple(s.ids) for s in c.sequences]
        if len({s[:1] for s in seqs}) < 2:
            continue
        beams = [s[:1] for s in seqs]
        cands = {x: p for b in beams for x, p in children(b, first[b]).items()}
        for s, seq in zip(c.sequences, seqs):
            want = included(first, seq[:1], True) * included(cands, seq, True)  # seq: 2 tokens, or EOS at once
            assert math.exp(s.inclusion) == pytest.approx(want, rel=1e-5), seqs
            raw = included(first, seq[:1], False) * included(cands, seq, False)
            raw_differs |= abs(raw - want) > 1e-3 * want
        checked += 1
    assert checked >= 20 and raw_differs, checked


def test_cpsbs_sets_keep_one_lineage_more_often_than_sbeam_by_design(cpsbs_runs):
    """Why `cpsbs` is less diverse than `sbeam` (README): a set's weight is a product, so K
    children of one beam outweigh one child of each. By enumeration, the design returns two
    sequences with one first token with probability P; `sbeam`'s sample without replacement of
    whole sequences does so far less often. Our runs land on P, not on sbeam's."""
    model, recipe, out, _ = cpsbs_runs
    k, runs = 2, len(out)
    children = cpsbs_children(model, recipe, 2)
    seq_p, layer = {(): 1.0}, {frozenset([()]): 1.0}
    for _ in range(2):
        nxt = {}
        for beams, p in layer.items():
            weights = {x: q for b in beams for x, q in children(b, seq_p[b]).items()}
            seq_p.update(weights)
            for st, q in poisson_sets(weights, k).items():
                nxt[st] = nxt.get(st, 0.0) + p * q
        layer = nxt
    one = sum(p for st, p in layer.items() if len({x[:1] for x in st}) == 1)
    sets = inclusion_probs(sequence_probs(model, recipe, [0, 1], 2, logprobs=True), k)[0]
    sbeam = sum(p for st, p in sets.items() if len({x[:1] for x in st}) == 1)
    seen = sum(len({tuple(s.ids[:1]) for s in c.sequences}) == 1 for c in out)
    sd = math.sqrt(runs * one * (1 - one))
    assert one > 2 * sbeam, (one, sbeam)
    assert abs(seen - runs * one) <= 4.5 * sd and abs(seen - runs * sbeam) > 4.5 * sd, (seen, one, sbeam)


def test_cpsbs_horvitz_thompson_estimates_are_unbiased(cpsbs_runs):
    """The paper's estimator: sum over the returned set of f(y)·p(y)/inclusion(y) has mean
    E_p[f]; here f = 1 (the total probability, 1) and f = [first token is 0]."""
    model, recipe, out, want = cpsbs_runs
    probs = sequence_probs(model, recipe, [0, 1], 2, logprobs=True)
    for f in (lambda ids: 1.0, lambda ids: float(ids[0] == 0)):
        est = [sum(f(s.ids) * math.exp(s.score - s.inclusion) for s in c.sequences) for c in out]
        mean, sd = float(np.mean(est)), float(np.std(est)) / math.sqrt(len(est))
        truth = sum(f(list(seq)) * p for seq, p in probs.items())
        assert abs(mean - truth) <= 4.5 * sd + 1e-9, (mean, truth, sd)


# -- compiled == eager, and the numbers are tensors -----------------------------------------

SWEEPS = [  # one structure each, two values of its number: the second must reuse the graph
    ("beam 3 | determinantal weight={} n=2 | max 5", (1.5, 0.25)),
    pytest.param("beam 3 | capped {} | max 5", (1, 2), marks=pytest.mark.slow),
    pytest.param("arith 3 | topk 4 | max 5", ("", ""), marks=pytest.mark.slow),
    pytest.param("cpsbs 3 | temp {} | max 5", (0.8, 1.3), marks=pytest.mark.slow),
]


def compiled_equals_eager_and_reuses_the_step(model, recipe, values):
    """Compiled == eager for `recipe` formatted with each of `values`, and the second value
    runs on the first one's graph (no new graph, no new step)."""
    from torch._dynamo.utils import counters

    from decode.compiler import step_cache

    prompts = [PROMPT, [1, 3, 4]]
    for i, value in enumerate(values):
        r = recipe.format(value)
        compiled = decode.generate(model, r, prompts, seed=3)
        eager = decode.generate(model, r, prompts, seed=3, compile=False)
        assert [[(s.ids, round(s.score, 4)) for s in c.sequences] for c in compiled] == \
            [[(s.ids, round(s.score, 4)) for s in c.sequences] for c in eager], r
        if i == 0:
            graphs, steps = counters["stats"]["unique_graphs"], step_cache.size()
    assert (counters["stats"]["unique_graphs"], step_cache.size()) == (graphs, steps)


@pytest.mark.parametrize("recipe,values", SWEEPS)
def test_compiled_equals_eager_and_a_sweep_reuses_the_step(recipe, values):
    compiled_equals_eager_and_reuses_the_step(table_model(2), recipe, values)


# -- every method ----------------------------------------------------------------------------

def code_lines(path: Path) -> int:
    """Lines of code: without blank lines, comments and docstrings."""
    tree = ast.parse(path.read_text())
    doc = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node):
            d = node.body[0]
            doc |= set(range(d.lineno, d.end_lineno + 1))
    return sum(1 for i, line in enumerate(path.read_text().splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in doc)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_is_one_file_of_at_most_30_lines_of_code(name):
    path = ROOT / "compiler" / "search" / f"{name}.py"
    assert code_lines(path) <= 30, f"{path.name}: {code_lines(path)} lines of code"
    assert decode.dsl.lookup(name).impl == f"decode.compiler.search.{name}"


@pytest.mark.parametrize("recipe,message,at", [
    ("beam 4 | capped 0", "g must satisfy 1 <= g", "capped 0"),
    ("sample 4 | determinantal weight=1", "'determinantal' needs a 'beam K' search", "determinantal weight=1"),
    ("beam 4 | determinantal weight=-1", "weight must satisfy 0 <= weight", "weight=-1"),
    ("sample 2 | capped 1", "'capped' needs a 'beam K' search", "capped 1"),
    ("beam 2 | cluster 5", "cluster 5 asks for more clusters than the 4 candidates", "5"),
    ("beam 4 | npad sigma=-1", "sigma must satisfy 0 <= sigma", "sigma=-1"),
    ("greedy | npad sigma=1", "'npad' needs a 'beam K' search", "npad sigma=1"),
])
def test_bad_input_is_one_message_at_the_clause(recipe, message, at):
    with pytest.raises(decode.RecipeError, match=message) as err:
        decode.parse(recipe)
    span = err.value.span
    assert recipe.index(at) <= span.start < span.end <= recipe.index(at) + len(at)
