"""draft and lookup: greedy gives plain greedy's tokens (and transformers' assisted
generation's), compiled and eager; sampling has plain sampling's distribution (chi-square
over 20k draws of the first two tokens), and a wrong acceptance rule is caught."""
from pathlib import Path

import pytest
import torch

import decode
from decode.compiler import speculative
from decode.runtime import ModelError

pytest.importorskip("transformers")
from llama_factory import make_hf_llama  # noqa: E402

PROMPTS = [[5, 9, 11, 5, 9, 11, 5, 9, 11, 5], [7, 3], [1, 20, 21, 22, 23, 20, 21]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three random target checkpoints and a smaller random draft of their vocabulary."""
    d = tmp_path_factory.mktemp("spec")
    targets = [make_hf_llama(d / f"t{s}", vocab=61, dim=32, layers=2, seed=s) for s in (1, 2, 3)]
    draft = make_hf_llama(d / "draft", vocab=61, dim=16, layers=1, heads=2, kv_heads=1, ff=32, seed=9)
    return targets, draft


@pytest.mark.parametrize("i", [0, 1, 2])
def test_greedy_with_draft_or_lookup_gives_plain_greedys_tokens_eager(models, i):
    targets, draft = models
    m = decode.load(str(targets[i]))
    want = decode.generate(m, "greedy | max 24", PROMPTS, compile=False)
    for r in (f'draft "{draft}" k=3', "lookup n=2 k=4", f'draft "{targets[(i + 1) % 3]}" k=2'):
        got = decode.generate(m, f"greedy | {r} | max 24", PROMPTS, compile=False)
        for g, w in zip(got, want):
            s = g.sequences[0]
            assert s.ids == w.sequences[0].ids, r
            assert abs(s.score - w.sequences[0].score) < 1e-4
            assert len(s.speculative["accepted"]) == len(s.speculative["proposed"]) >= 1
            assert all(0 <= a <= p for a, p in zip(s.speculative["accepted"], s.speculative["proposed"]))



def test_a_second_run_with_another_max_or_prompt_length_is_not_the_first_runs_step(models):
    """The round is kept per structure: `max` and the prompts' length must not be baked into it
    (a run with max 4 then one with max 24 stopped the second at 4 new tokens)."""
    m = decode.load(str(models[0][1]))
    for r in ("lookup n=1 k=3", f'draft "{models[1]}" k=2'):
        for prompts, mx in (([PROMPTS[1]], 4), ([PROMPTS[1]], 20), ([PROMPTS[0]], 20), ([PROMPTS[1]], 20)):
            want = decode.generate(m, f"greedy | max {mx}", prompts, compile=False)[0].sequences[0]
            got = decode.generate(m, f"greedy | {r} | max {mx}", prompts, compile=False)[0].sequences[0]
            assert (got.ids, got.finish) == (want.ids, want.finish), (r, mx)

@pytest.mark.slow  # three structures to compile: minutes on a loaded 2-core CPU
def test_compiled_equals_eager_and_plain_greedy(models):
    targets, draft = models
    m = decode.load(str(targets[0]))
    want = decode.generate(m, "greedy | max 24", PROMPTS, compile=False)
    for r in (f'greedy | draft "{draft}" k=3 | max 24', "greedy | lookup n=2 k=4 | max 24"):
        got = decode.generate(m, r, PROMPTS, compile=True)
        assert [g.sequences[0].ids for g in got] == [w.sequences[0].ids for w in want]
    seeded = 'sample 2 | draft "%s" k=3 | temp 0.9 | max 12' % draft
    a = decode.generate(m, seeded, PROMPTS, seed=4, compile=True)
    b = decode.generate(m, seeded, PROMPTS, seed=4, compile=False)
    assert [[s.ids for s in c.sequences] for c in a] == [[s.ids for s in c.sequences] for c in b]


def test_lookup_accepts_drafts_where_the_output_quotes_the_prompt(models):
    m = decode.load(str(models[0][0]))
    s = decode.generate(m, "greedy | lookup n=2 k=4 | max 24", [PROMPTS[0]], compile=False)[0].sequences[0]
    plain = decode.generate(m, "greedy | max 24", [PROMPTS[0]], compile=False)[0].sequences[0]
    assert s.ids == plain.ids
    assert sum(s.speculative["accepted"]) + len(s.speculative["accepted"]) >= len(s.ids)


def test_greedy_matches_transformers_assisted_and_prompt_lookup(models):
    from transformers import LlamaForCausalLM

    targets, draft = models
    hf = LlamaForCausalLM.from_pretrained(targets[0]).eval()
    assistant = LlamaForCausalLM.from_pretrained(draft).eval()
    m = decode.load(str(targets[0]))
    for ids in PROMPTS:
        x = torch.tensor([ids])
        common = dict(max_new_tokens=16, do_sample=False, eos_token_id=2, pad_token_id=0)
        a = hf.generate(x, assistant_model=assistant, **common)[0, len(ids):].tolist()
        b = hf.generate(x, prompt_lookup_num_tokens=4, **common)[0, len(ids):].tolist()
        ours = decode.generate(m, f'greedy | draft "{draft}" k=3 | max 16', [ids], compile=False)
        assert ours[0].sequences[0].ids == a == b


# ------------------------------------------------------------------------- distribution

def exact_two(m, prompt, t: float):
    """{(t1,) or (t1, t2): probability} of plain sampling with temp t, max 2 (EOS = 2 ends)."""
    with torch.no_grad():
        p1 = torch.softmax(m(torch.tensor([prompt]))[0, -1] / t, -1)
        out = {}
        for a in range(p1.shape[0]):
            if a == 2:
                out[(a,)] = float(p1[a])
                continue
            p2 = torch.softmax(m(torch.tensor([prompt + [a]]))[0, -1] / t, -1)
            for b in range(p2.shape[0]):
                out[(a, b)] = float(p1[a] * p2[b])
    return out


def chi_square_p(counts: dict, probs: dict, total: int) -> float:
    """p-value of Pearson's chi-square, cells with fewer than 5 expected pooled into one."""
    small = [c for c in probs if probs[c] * total < 5]
    obs = [counts.get(c, 0) for c in probs if c not in small] + [sum(counts.get(c, 0) for c in small)]
    exp = [probs[c] * total for c in probs if c not in small] + [sum(probs[c] for c in small) * total]
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    dof = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(chi2 / 2, dtype=torch.float64)))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 6-token target and a draft that disagrees with it (so that rejections matter)."""
    d = tmp_path_factory.mktemp("small")
    return (make_hf_llama(d / "t", vocab=6, dim=16, layers=1, heads=2, kv_heads=1, ff=32, seed=5),
            make_hf_llama(d / "d", vocab=6, dim=16, layers=1, heads=2, kv_heads=1, ff=32, seed=6))


def sampled(target, draft, seed: int):
    m = decode.load(str(target))
    prompt = [3, 1, 4]
    outs = decode.generate(m, f'sample 5000 | draft "{draft}" k=2 | temp 0.7 | max 2', [prompt] * 4,
                           seed=seed, compile=False)
    counts = {}
    for c in outs:
        for s in c.sequences:
            counts[tuple(s.ids)] = counts.get(tuple(s.ids), 0) + 1
    return counts, exact_two(m, prompt, 0.7)


def test_sampling_with_a_draft_has_plain_samplings_distribution(small):
    counts, probs = sampled(*small, seed=0)
    assert sum(counts.values()) == 20000
    assert chi_square_p(counts, probs, 20000) > 0.01


def test_a_wrong_acceptance_rule_fails_the_distribution_test(small, monkeypatch):
    # drawing from p itself after a rejection (not max(0, p - q)) over-weights the draft's picks
    monkeypatch.setattr(speculative, "residual", lambda p, q: p)
    counts, probs = sampled(*small, seed=0)
    assert chi_square_p(counts, probs, 20000) < 0.01


# ------------------------------------------------------------------------- bad input

def test_bad_input_names_the_problem_and_the_fix(models, tmp_path):
    targets, _ = models
    m = decode.load(str(targets[0]))
    other = make_hf_llama(tmp_path / "o", vocab=50, dim=16, layers=1, heads=2, kv_heads=1, ff=32)
    with pytest.raises(ModelError, match="vocabulary has 50 tokens, the target's 61"):
        decode.generate(m, f'greedy | draft "{other}" | max 4', [[1, 2]], compile=False)
    with pytest.raises(ValueError, match="lookup n=3.*but the prompt has 2"):
        decode.generate(m, "greedy | lookup n=3 | max 4", [[1, 2]], compile=False)
    with pytest.raises(ValueError, match="lookup n=3.*but prompt 1 has 2"):
        decode.generate(m, "greedy | lookup n=3 | max 4", [[1, 2, 3], [1, 2]], compile=False)
    with pytest.raises(ValueError, match="keeps state"):
        decode.generate(m, "greedy | lookup | repetition 1.2 | max 4", [[1, 2, 3]], compile=False)
    for r in ("greedy | lookup n=1 | cfg scale=1.5 | max 4", "sample 2 | draft \"%s\" | cfg scale=2 | max 4" % models[1]):
        with pytest.raises(ValueError, match="unconditional rows.*drop one of them"):
            decode.generate(m, r, [[1, 2, 3]], compile=False)
    for bad, says in (("greedy | draft k=0", "1 <= k <= 16"), ("beam 4 | draft", "not 'beam 4'"),
                      ("lookup | draft", "keep one of them")):
        with pytest.raises(decode.RecipeError, match=says):
            decode.parse(bad)
    assert Path(str(targets[0])).exists()
