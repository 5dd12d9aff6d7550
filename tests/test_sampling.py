"""Sampling is checked by distribution, against exact probabilities.

A bigram table model (tests/table_model.py) makes every sequence's probability under a
recipe's stages computable, so draws are compared with exact enumeration by Pearson's
chi-square (fixed seeds, p > 0.001): `sample` with every sampling stage and the history
penalties, `sbeam K` (K distinct sequences, a sample without replacement from the sequence
distribution), one step of beam sampling. Draws are cheap: `sample N` is N rows of one
batch, and N identical prompts are N independent runs (each prompt has its own RNG).
Then seeds: the same seed gives the same tokens, and the compiled step the eager tokens.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import decode
from table_model import TableModel, chi_square, inclusion_probs, sequence_probs, step_probs

N = 5000           # draws per distribution test
RUNS = 2500        # independent sbeam / beam-sampling runs per test
ALPHA = 1e-3
PROMPT = [0, 3, 0]


@pytest.fixture(scope="module")
def bigram():
    return TableModel.random(0, scale=1.5)


@pytest.fixture(scope="module")
def small():
    """Four tokens (3 is EOS): few enough sequences to enumerate every K-subset of them."""
    return TableModel.random(1, size=4, scale=1.2)


def total_variation(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(x, 0.0) - q.get(x, 0.0)) for x in set(p) | set(q))


def assert_fits(counts: Counter, probs: dict, n: int, what: str) -> float:
    stat, p, df = chi_square(counts, probs, n)
    print(f"\n{what}: chi-square {stat:.1f} on {df} df, p = {p:.3f}")
    assert p > ALPHA, f"{what}: chi-square {stat:.1f} on {df} df, p = {p:.2e}"
    return p


# -- sample: every stage -----------------------------------------------------------------------

STAGES = [
    "temp 0.7", "temp 1.6", "topk 3", "topp 0.8", "minp 0.2", "typical 0.8", "epsilon 0.05",
    "eta 0.05", "topnsigma 1.0", "repetition 1.5", "presence 1.0 | frequency 0.5", "norepeat 2",
    "minnew 1", "minlen 3", "repetition 1.3 | topk 5 | topp 0.9 | temp 0.7", "temp 0.7 | topp 0.9 | topk 5",
]
LIKELY_EOS = [0, 2]  # token 2 is followed by EOS with probability 0.64: minnew/minlen have work to do


@pytest.mark.parametrize("stages", STAGES)
def test_sample_draws_follow_the_exact_processed_distribution(bigram, stages):
    """Two tokens per draw: the second step sees the first token in its history."""
    prompt = LIKELY_EOS if stages.startswith(("minnew", "minlen")) else PROMPT
    out = decode.generate(bigram, f"sample {N} | {stages} | max 2", [prompt], seed=1234, compile=False)
    counts = Counter(tuple(s.ids) for s in out[0].sequences)
    probs = sequence_probs(bigram, stages, prompt, 2)
    assert total_variation(probs, sequence_probs(bigram, "greedy", prompt, 2)) > 0.02, "the stage changes nothing here"
    assert_fits(counts, probs, N, f"sample | {stages}")


def test_the_check_rejects_a_slightly_wrong_distribution(bigram):
    """The test above can fail: draws at temp 0.7 do not pass for temp 0.8, nor draws of
    `repetition 1.5` for a penalty that forgot the first new token at the second step."""
    from decode.compiler.context import StepContext
    from decode.compiler.stages import apply_stage

    out = decode.generate(bigram, f"sample {N} | temp 0.7 | max 2", [PROMPT], seed=1234, compile=False)
    counts = Counter(tuple(s.ids) for s in out[0].sequences)
    assert chi_square(counts, sequence_probs(bigram, "temp 0.8", PROMPT, 2), N)[1] < 1e-6

    out = decode.generate(bigram, f"sample {N} | repetition 1.5 | max 2", [PROMPT], seed=1234, compile=False)
    counts = Counter(tuple(s.ids) for s in out[0].sequences)
    prompt_only = StepContext.from_input_ids(torch.tensor([PROMPT]), new_len=0)
    wrong = {}
    for (first,), p in sequence_probs(bigram, "repetition 1.5", PROMPT, 1).items():
        if first == bigram.config.eos_ids[0]:
            wrong[(first,)] = p
            continue
        second = apply_stage("repetition", bigram.table[first][None].detach(), prompt_only, r=1.5)
        for tok, q in enumerate(torch.softmax(second.double(), -1)[0].tolist()):
            wrong[(first, tok)] = p * q
    assert chi_square(counts, wrong, N)[1] < 1e-6


def test_sample_on_a_llama_checkpoint_follows_its_distribution(tmp_path_factory):
    pytest.importorskip("transformers")
    from llama_factory import make_hf_llama

    m = decode.load(str(make_hf_llama(tmp_path_factory.mktemp("v8") / "m", vocab=8, dim=16, layers=1, seed=2)))
    n, prompt, stages = 2000, [1, 5, 4], "topp 0.9 | temp 0.5"
    out = decode.generate(m, f"sample {n} | {stages} | max 2", [prompt], seed=99, compile=False)
    counts = Counter(tuple(s.ids) for s in out[0].sequences)
    assert_fits(counts, sequence_probs(m, stages, prompt, 2), n, f"llama sample | {stages}")


def test_sample_rows_come_best_first_each_keeping_its_draw(bigram):
    """`sample n` returns its n independent draws best first, each with its draw index and
    scored by its log-probability under the processed distribution; draw j is the same
    sequence whatever n is (a row's draws depend on the seed and its index alone)."""
    out = decode.generate(bigram, "sample 64 | topk 4 | max 2", [PROMPT], seed=5, compile=False)
    seqs = out[0].sequences
    probs = sequence_probs(bigram, "topk 4", PROMPT, 2)
    for s in seqs:
        assert s.score == pytest.approx(math.log(probs[tuple(s.ids)]), abs=1e-5)
    assert [s.score for s in seqs] == sorted((s.score for s in seqs), reverse=True)
    assert sorted(s.draw for s in seqs) == list(range(64)) != [s.draw for s in seqs]
    few = decode.generate(bigram, "sample 8 | topk 4 | max 2", [PROMPT], seed=5, compile=False)[0].sequences
    drawn = {s.draw: s.ids for s in seqs}
    assert sorted(s.draw for s in few) == list(range(8)) and all(drawn[s.draw] == s.ids for s in few)


# -- sbeam: sampling without replacement from the sequence tree -----------------------------------

def draw_sets(model, recipe, runs, seed):
    out = decode.generate(model, recipe, [[0, 1]] * runs, seed=seed, compile=False)
    return [c.sequences for c in out]


@pytest.mark.parametrize("recipe, stages, k, max_new", [
    ("sbeam 2 | max 2", "greedy", 2, 2),
    ("sbeam 3 | max 2", "greedy", 3, 2),
    ("sbeam 3 | temp 0.7 | max 3", "temp 0.7", 3, 3),
    ("sbeam 2 | topk 2 | max 2", "topk 2", 2, 2),
])
def test_sbeam_draws_k_sequences_without_replacement(small, recipe, stages, k, max_new):
    probs = sequence_probs(small, stages, [0, 1], max_new, logprobs=True)
    sets, inclusion = inclusion_probs(probs, k)
    runs = draw_sets(small, recipe, RUNS, seed=7)
    counts, included = Counter(), Counter()
    for seqs in runs:
        ids = [tuple(s.ids) for s in seqs]
        assert len(ids) == len(set(ids)) == k, "K distinct sequences"
        assert [s.score for s in seqs] == sorted((s.score for s in seqs), reverse=True)
        for s in seqs:  # the score is the sequence's log-probability under the stages
            assert s.score == pytest.approx(math.log(probs[tuple(s.ids)]), abs=1e-4)
        counts[frozenset(ids)] += 1
        included.update(ids)
    assert_fits(counts, sets, RUNS, recipe)
    # each sequence's inclusion frequency within 4.5 standard errors of the exact probability
    for seq, pi in inclusion.items():
        se = math.sqrt(pi * (1 - pi) / RUNS) + 1e-12
        assert abs(included[seq] / RUNS - pi) < 4.5 * se + 1e-9, (seq, included[seq] / RUNS, pi)


def test_sbeam_returns_every_sequence_when_fewer_than_k_exist(small):
    out = decode.generate(small, "sbeam 6 | max 1", [[0, 1]], seed=1, compile=False)
    ids = [s.ids for s in out[0].sequences]
    probs = step_probs(small, "greedy", [0, 1], 0, logprobs=True)
    assert sorted(ids) == [[0], [1], [2], [3]]
    assert ids == [[t] for t in probs.argsort(descending=True).tolist()]


def test_sbeam_under_temp_0_returns_the_k_most_likely_sequences(bigram):
    """temp 0 means argmax: nothing is drawn, and sbeam searches for the K best (it used
    to crash on the missing noise)."""
    for prompt in (PROMPT, [2, 5], [1]):
        out = decode.generate(bigram, "sbeam 3 | temp 0 | max 2", [prompt], compile=False)
        probs = sequence_probs(bigram, "greedy", prompt, 2, logprobs=True)
        best = sorted(probs, key=probs.get, reverse=True)[:3]
        assert [tuple(s.ids) for s in out[0].sequences] == best


def test_sbeam_samples_from_the_stages_as_written(small):
    out = decode.generate(small, "sbeam 2 | topk 1 | max 2", [[0, 1]], seed=1, compile=False)
    assert len(out[0].sequences) == 1


# -- beam sampling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe, stages", [
    ("beam 2 | temp 1.0 | max 1", "temp 1.0"),
    # the reference keeps 1 + #EOS tokens in beam sampling: topp's keep becomes 2
    ("beam 2 | topp 0.8 | max 1", "topp 0.8 keep=2"),
])
def test_one_step_of_beam_sampling_draws_k_tokens_without_replacement(small, recipe, stages):
    probs = sequence_probs(small, stages, [0, 1], 1, logprobs=True)
    sets, _ = inclusion_probs(probs, 2)
    counts = Counter(frozenset(tuple(s.ids) for s in seqs) for seqs in draw_sets(small, recipe, RUNS, seed=3))
    assert_fits(counts, sets, RUNS, recipe)


def test_beam_sampling_returns_distinct_sequences_scored_by_log_prob_per_token(bigram):
    out = decode.generate(bigram, "beam 3 | temp 1.0 | max 3", [PROMPT, [2, 5]], seed=8, compile=False)
    for comp in out:
        ids = [tuple(s.ids) for s in comp.sequences]
        assert len(ids) == len(set(ids)) == 3
        for s in comp.sequences:
            logp = sum(math.log(step_probs(bigram, "temp 1.0", comp.prompt_ids + s.ids[:i], i, True)[tok])
                       for i, tok in enumerate(s.ids))
            assert s.score == pytest.approx(logp / len(s.ids), abs=1e-4)


def test_cold_beam_sampling_is_beam_search(bigram):
    prompts = [PROMPT, [2, 5], [1], [4, 4, 6]]
    cold = decode.generate(bigram, "beam 3 | temp 0.01 | max 4", prompts, seed=2, compile=False)
    plain = decode.generate(bigram, "beam 3 | max 4", prompts, compile=False)
    assert [[s.ids for s in c.sequences] for c in cold] == [[s.ids for s in c.sequences] for c in plain]


# -- seeds and compilation ---------------------------------------------------------------------------

RECIPES = {
    "sample": "sample 6 | repetition 1.2 | topk 6 | topp 0.9 temp 0.7 | max 6",
    "beam": "beam 3 | topp 0.9 temp 0.7 | max 6",
    "diverse": "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7 | max 6",
    "sbeam": "sbeam 3 | topk 6 | max 6",
    "mirostat": "sample 6 | frequency 0.3 | mirostat tau=3 eta=0.2 | max 6",  # stages with state, one selects
}
PROMPTS = [PROMPT, [2, 5], [1], [4, 4, 6]]


def tokens(outs) -> list:
    return [[s.ids for s in c.sequences] for c in outs]


def same_run(a, b) -> None:
    assert tokens(a) == tokens(b)
    for ca, cb in zip(a, b):
        assert [s.score for s in ca.sequences] == pytest.approx([s.score for s in cb.sequences], abs=1e-4)


@pytest.mark.parametrize("strategy", RECIPES)
def test_the_same_seed_gives_the_same_tokens_and_another_seed_others(bigram, strategy):
    run = lambda seed: decode.generate(bigram, RECIPES[strategy], PROMPTS, seed=seed, compile=False)  # noqa: E731
    first = run(17)
    assert [c.to_json() for c in run(17)] == [c.to_json() for c in first]
    assert tokens(run(18)) != tokens(first)


@pytest.mark.slow  # a fresh interpreter imports torch: ~5-10 s
def test_a_seed_gives_the_same_tokens_in_another_process(bigram):
    script = ("import torch, decode\nfrom table_model import TableModel\n"
              "m = TableModel(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) * 1.5, eos=7)\n"
              f"out = decode.generate(m, {RECIPES['sbeam']!r}, {PROMPTS!r}, seed=31, compile=False)\n"
              "print([[s.ids for s in c.sequences] for c in out])\n")
    here = str(Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=here,
                          env={**os.environ, "PYTHONPATH": here}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ours = decode.generate(bigram, RECIPES["sbeam"], PROMPTS, seed=31, compile=False)
    assert proc.stdout.strip() == str(tokens(ours))


def test_the_seed_clause_seeds_the_run_and_an_explicit_seed_overrides_it(bigram):
    r = "sample 8 | topp 0.9 | max 4"
    clause = tokens(decode.generate(bigram, r + " | seed 5", PROMPTS, compile=False))
    assert clause == tokens(decode.generate(bigram, r, PROMPTS, seed=5, compile=False))
    assert clause != tokens(decode.generate(bigram, r + " | seed 5", PROMPTS, seed=6, compile=False))


# Compiling costs ~10-25 s of CPU each: three strategies by default, beam sampling and the
# llama versions under `pytest -m slow`.
@pytest.mark.parametrize("strategy", [
    "sample", "sbeam", "diverse", "mirostat", pytest.param("beam", marks=pytest.mark.slow),
])
def test_compiled_sampling_gives_the_eager_tokens(bigram, strategy):
    eager = decode.generate(bigram, RECIPES[strategy], PROMPTS, seed=23, compile=False)
    compiled = decode.generate(bigram, RECIPES[strategy], PROMPTS, seed=23, compile=True)
    same_run(compiled, eager)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", RECIPES)
def test_compiled_sampling_on_a_llama_gives_the_eager_tokens(tmp_path_factory, strategy):
    pytest.importorskip("transformers")
    from llama_factory import make_hf_llama

    m = decode.load(str(make_hf_llama(tmp_path_factory.mktemp("llama") / "m", vocab=61, seed=4)))
    prompts = [[1, 5, 9, 13], [1, 22]]
    eager = decode.generate(m, RECIPES[strategy].replace("max 6", "max 10"), prompts, seed=5, compile=False)
    compiled = decode.generate(m, RECIPES[strategy].replace("max 6", "max 10"), prompts, seed=5, compile=True)
    same_run(compiled, eager)
