"""Diverse beam sampling (`beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7`), which
transformers refuses: it runs, repeats with its seed, compiles to the eager tokens, applies
per group the Hamming penalty, then the stages, then sampling, and its sequences share
fewer n-grams than plain beam sampling's on the same prompts.
"""
from __future__ import annotations

import random

import pytest
import torch

import decode
from decode.compiler.search.base import At, SearchConfig
from decode.compiler.search.diverse import Diverse

DIVERSE = "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7 | max 10"
PLAIN = "beam 4 | topp 0.9 temp 0.7 | max 10"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    pytest.importorskip("transformers")
    from llama_factory import make_hf_llama

    return decode.load(str(make_hf_llama(tmp_path_factory.mktemp("diverse") / "m", vocab=61, seed=6)))


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[1] + [rng.randrange(3, 61) for _ in range(rng.randrange(2, 8))] for _ in range(n)]


def distinct(seqs: list[list[int]], n: int) -> float:
    """distinct-n: unique n-grams / all n-grams over a prompt's returned sequences."""
    grams = [tuple(s[i:i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def mean_distinct(model, recipe: str, n: int, ps, seeds) -> float:
    scores = []
    for seed in seeds:
        for comp in decode.generate(model, recipe, ps, seed=seed, compile=False):
            scores.append(distinct([s.ids for s in comp.sequences], n))
    return sum(scores) / len(scores)


def test_diverse_beam_sampling_runs_and_repeats_with_its_seed(llama):
    ps = prompts(2)
    first = decode.generate(llama, DIVERSE, ps, seed=3, compile=False)
    again = decode.generate(llama, DIVERSE, ps, seed=3, compile=False)
    other = decode.generate(llama, DIVERSE, ps, seed=4, compile=False)
    assert [c.to_json() for c in again] == [c.to_json() for c in first]
    assert [[s.ids for s in c.sequences] for c in other] != [[s.ids for s in c.sequences] for c in first]
    for comp in first:
        assert len(comp.sequences) == 4
        assert [s.score for s in comp.sequences] == sorted((s.score for s in comp.sequences), reverse=True)
        assert all(s.finish in ("eos", "max") for s in comp.sequences)


@pytest.mark.slow  # ~25-50 s of compiling; test_sampling.py compiles it on a table model by default
def test_compiled_diverse_beam_sampling_on_a_llama_gives_the_eager_tokens(llama):
    ps = prompts(3, seed=1)
    eager = decode.generate(llama, DIVERSE, ps, seed=9, compile=False)
    compiled = decode.generate(llama, DIVERSE, ps, seed=9, compile=True)
    assert [[s.ids for s in c.sequences] for c in compiled] == [[s.ids for s in c.sequences] for c in eager]


def test_diverse_beam_sampling_sequences_share_fewer_ngrams_than_beam_sampling(llama):
    ps, seeds = prompts(6, seed=2), (1, 2)
    for n in (1, 2):
        diverse = mean_distinct(llama, DIVERSE, n, ps, seeds)
        plain = mean_distinct(llama, PLAIN, n, ps, seeds)
        assert diverse > 1.2 * plain, f"distinct-{n}: diverse {diverse:.3f} vs plain {plain:.3f}"


def test_each_group_is_penalised_before_the_stages_and_sampling(llama):
    """With a huge penalty each group's first token differs from earlier groups' even under
    `topk 1`: the penalty comes before truncation (after it, topk 1 would leave each group
    only the token the first group took)."""
    out = decode.generate(llama, "beam 4 | diverse groups=4 penalty=1000 | topk 1 | max 1", prompts(5), seed=1,
                          compile=False)
    for comp in out:
        assert len({s.ids[0] for s in comp.sequences}) == 4


def test_a_sampled_group_is_not_done_while_a_drawn_continuation_can_beat_its_worst_hypothesis():
    """Sampling keeps candidates in draw order, so the first one drawn need not be the best:
    the stopping bound must use the best drawn score (a bug once used the first drawn)."""
    v, eos = 6, 5
    cfg = SearchConfig(batch=1, params={"k": 2, "lenpen": 1.0, "early": False, "return": 2},
                       modifiers={"diverse": {"groups": 1, "penalty": 0.0}}, sampling=True, eos=(eos,), pad=0)
    search = Diverse(cfg)
    state = search.begin(torch.device("cpu"), seq_len=8)
    state["count"][:] = 2                                  # the pool is full...
    state["score"][:] = torch.tensor([-1.0, -2.0])         # ...and its worst scores -2
    scores = torch.full((2, v), -6.0)
    scores[0, 0], scores[0, 1] = -0.2, -3.0                # token 0 is best, token 1 is drawn first
    # draw j reads the group's first row's noise[0, j]: 0.95 of the mass falls on token 1
    # (token 0 holds the first 0.93), then 1e-6 of what is left on token 0
    noise = torch.full((2, v), 0.5)
    noise[0, 0], noise[0, 1] = 0.95, 1e-6
    hp = {"lenpen": torch.tensor(1.0), "penalty": torch.tensor(0.0)}
    at = At(t=torch.tensor(0), process=lambda x, rows: x, noise=noise, seq=torch.zeros(2, 8, dtype=torch.long),
            prompt=torch.tensor(2), max_new=torch.tensor(6), hp=hp)
    tokens, _, new, _ = search.advance(scores, at, state)
    assert tokens.tolist() == [1, 0]                       # draw order: token 1, then token 0
    assert not bool(new["done"].any()), "token 0 (-0.2) can still beat the worst hypothesis (-2)"
    assert state["run"][0, 0, 1] == float("-inf")  # the second beam is not live yet


@pytest.mark.parametrize("recipe,keep", [("beam 4 | topp 0.9", 2), ("beam 4 | diverse groups=2 | topp 0.9", 1),
                                         ("sample 2 | topp 0.9", 1), ("beam 4 | topp 0.9 keep=3", 3)])
def test_only_plain_beam_sampling_raises_a_truncations_minimum(recipe, keep):
    """transformers' beam sampling keeps 1 + #EOS tokens in each truncation; diverse beam
    sampling (which it refuses) keeps what the recipe says, as it always has."""
    from decode.compiler.plan import compile as lower
    from decode.dsl import lookup

    plan = lower(recipe)
    search = plan.search(SearchConfig(batch=1, params=plan.search_params, modifiers=plan.modifiers,
                                      sampling=plan.sampling, eos=(5,)))
    assert search.stage_params(lookup("topp"), dict(plan.stages[0].params))["keep"] == keep
