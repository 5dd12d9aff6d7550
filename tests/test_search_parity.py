"""Token-exact parity of greedy, beam and diverse beam search with transformers' generate.

Random llama checkpoints are built here; the EOS row of lm_head is boosted so that EOS
turns up mid-sequence in some beams. All K returned sequences are compared: ids, order,
and scores (1e-4).
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402

EOS = 2
PAD = 0
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [1, 40, 41, 42, 43, 44, 45, 46]]
MAX_NEW = 12


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    path = make_hf_llama(d / "m", vocab=61, dim=32, layers=2, heads=4, kv_heads=2, ff=64, seed=3)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # make EOS likely enough to end some beams early
        hf.lm_head.weight[EOS] += 0.6 * hf.lm_head.weight.mean(0) + 0.15
    hf.save_pretrained(path, safe_serialization=True)
    ours = decode.load(str(path))
    return hf, ours


def hf_generate(hf, prompts, **kw):
    p_len = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                      eos_token_id=EOS, pad_token_id=EOS, return_dict_in_generate=True,
                      output_scores=True, top_k=None, top_p=None, temperature=None, **kw)
    n = kw.get("num_return_sequences", 1)
    seqs, scores = [], []
    for i in range(len(prompts)):
        rows = []
        for j in range(n):
            new = out.sequences[i * n + j, p_len:].tolist()
            if EOS in new:
                new = new[: new.index(EOS) + 1]
            rows.append(new)
        seqs.append(rows)
        if getattr(out, "sequences_scores", None) is not None:
            scores.append(out.sequences_scores[i * n:(i + 1) * n].tolist())
    return seqs, scores


def check(ours, seqs, scores):
    assert len(ours) == len(seqs)
    for i, comp in enumerate(ours):
        got = [s.ids for s in comp.sequences]
        assert got == seqs[i], f"prompt {i}: ours {got} vs reference {seqs[i]}"
        if scores:
            for s, ref in zip(comp.sequences, scores[i]):
                assert s.score == pytest.approx(ref, abs=1e-4)
            for s in comp.sequences:
                assert s.finish == ("eos" if s.ids[-1] == EOS else "max")


# Compiling every case costs ~20 s of CPU each: CI compiles one case per strategy (marked
# `compiled`); `pytest -m slow` compiles them all.
COMPILED = [False, pytest.param(True, marks=pytest.mark.slow)]


@pytest.mark.parametrize("compiled", [False, True])
def test_greedy_matches_reference(models, compiled):
    hf, ours = models
    seqs, _ = hf_generate(hf, PROMPTS, num_beams=1)
    check(decode.generate(ours, f"greedy | max {MAX_NEW}", PROMPTS, compile=compiled), seqs, None)


def test_some_beams_end_with_eos_mid_sequence(models):
    hf, ours = models
    out = decode.generate(ours, f"beam 4 | max {MAX_NEW}", PROMPTS, compile=False)
    lengths = [len(s.ids) for c in out for s in c.sequences if s.finish == "eos"]
    assert lengths and min(lengths) < MAX_NEW


EARLY = {"false": False, "true": True, "never": "never"}


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("k", [2, 4, 5])
@pytest.mark.parametrize("lenpen", [0.6, 1.0, 2.0])
@pytest.mark.parametrize("early", ["false", "true", "never"])
def test_beam_matches_reference(models, k, lenpen, early, compiled):
    hf, ours = models
    seqs, scores = hf_generate(hf, PROMPTS, num_beams=k, num_return_sequences=k,
                               length_penalty=lenpen, early_stopping=EARLY[early])
    recipe = f"beam {k} lenpen={lenpen} early={early} | max {MAX_NEW}"
    check(decode.generate(ours, recipe, PROMPTS, compile=compiled), seqs, scores)


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("k,g,lam", [(4, 2, 0.5), (6, 3, 0.3), (4, 4, 1.0)])
@pytest.mark.parametrize("lenpen,early", [(1.0, "false"), (0.6, "true"), (2.0, "never")])
def test_diverse_beam_matches_reference(models, k, g, lam, lenpen, early, compiled):
    hf, ours = models
    seqs, scores = hf_generate(hf, PROMPTS, num_beams=k, num_beam_groups=g, diversity_penalty=lam,
                               num_return_sequences=k, length_penalty=lenpen,
                               early_stopping=EARLY[early])
    recipe = f"beam {k} lenpen={lenpen} early={early} | diverse groups={g} penalty={lam} | max {MAX_NEW}"
    check(decode.generate(ours, recipe, PROMPTS, compile=compiled), seqs, scores)


@pytest.mark.parametrize("r,extra", [(1.3, ""), (0.7, " | diverse groups=2 penalty=0.5")])
def test_beams_carry_a_stateful_stage_with_their_rows(models, r, extra):
    """repetition keeps running counts (its state): beams that change parents must take their
    parent's counts, so the result is the reference's, which rescans each row's history.
    (Prompts of one length: the reference also penalises the padding it reads as tokens.)"""
    hf, ours = models
    prompts = [[1, 5, 9, 13, 7], [1, 22, 3, 22, 8]]
    kw = {"num_beam_groups": 2, "diversity_penalty": 0.5} if extra else {}
    seqs, scores = hf_generate(hf, prompts, num_beams=4, num_return_sequences=4, repetition_penalty=r, **kw)
    check(decode.generate(ours, f"beam 4{extra} | repetition {r} | max {MAX_NEW}", prompts, compile=False),
          seqs, scores)


def test_beam_return_fewer(models):
    hf, ours = models
    seqs, scores = hf_generate(hf, PROMPTS[:2], num_beams=4, num_return_sequences=2)
    check(decode.generate(ours, f"beam 4 return=2 | max {MAX_NEW}", PROMPTS[:2], compile=False), seqs, scores)


def test_compiled_beam_and_diverse_match_reference_and_numbers_do_not_recompile(models):
    """One compiled graph per structure: sweeping lenpen / penalty reuses it."""
    from torch._dynamo.utils import counters

    hf, ours = models
    for lenpen in (0.6, 1.2, 2.0):
        seqs, scores = hf_generate(hf, PROMPTS, num_beams=4, num_return_sequences=4, length_penalty=lenpen)
        check(decode.generate(ours, f"beam 4 lenpen={lenpen} | max {MAX_NEW}", PROMPTS), seqs, scores)
        if lenpen == 0.6:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs
    for lam in (0.5, 1.5):
        seqs, scores = hf_generate(hf, PROMPTS, num_beams=4, num_beam_groups=2, diversity_penalty=lam,
                                   num_return_sequences=4)
        recipe = f"beam 4 | diverse groups=2 penalty={lam} | max {MAX_NEW}"
        check(decode.generate(ours, recipe, PROMPTS), seqs, scores)
        if lam == 0.5:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs
