"""The stages from transformers' generate (issue 18): minlen / minnew, suppress,
suppress_at_start, force_bos, force_eos, lengthdecay, renormalize and multi-token bias.

Each against its transformers 4.55.4 processor on the same tensors (test_stages.py's rows:
ties, -inf, one finite logit, ...), on rows with different histories (each row against the
reference run on that row alone), and all of them together in generate(), greedy and beam,
token for token with scores. Then the bad input: check errors with a caret, and token ids
outside the vocabulary stopping the run with one message.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import decode
from decode.cli import main
from decode.compiler.context import StepContext
from decode.compiler.plan import compile as lower
from decode.compiler.stages import apply_stage
from decode.dsl import RecipeError, hf_kwargs, parse
from test_search_parity import models  # noqa: F401  (the fixture: random checkpoints, ours and transformers')
from test_stages import history, make_logits, padded_context, same

hf = pytest.importorskip("transformers.generation.logits_process")

EOS_SETS = ([2], [2, 7])


def ctx_of(ids: torch.Tensor, prompt: int, eos=(2,), max_new=None) -> StepContext:
    """`ids` [R, T] whose first `prompt` tokens are the prompt, the rest generated."""
    return StepContext.from_input_ids(ids, eos_ids=eos, new_len=ids.shape[1] - prompt, max_new=max_new)


# -- each stage against its processor ------------------------------------------------------

@pytest.mark.parametrize("n", [0, 5, 12, 13, 20])
def test_minlen_counts_the_prompt_as_min_length_does(n):
    ids = history(0)
    for seed in range(2):
        logits = make_logits(seed)
        for eos in EOS_SETS:
            for prompt in (4, 12):  # the prompt's length does not matter: the whole row counts
                ref = hf.MinLengthLogitsProcessor(n, eos)(ids, logits.clone())
                same(apply_stage("minlen", logits, ctx_of(ids, prompt, eos), n=n), ref)


@pytest.mark.parametrize("tokens", [[3], [0, 63, 5], [7, 7, 2]])
def test_suppress_matches_suppress_tokens(tokens):
    for seed in range(3):
        ids, logits = history(seed), make_logits(seed)
        ref = hf.SuppressTokensLogitsProcessor(tokens)(ids, logits.clone())
        same(apply_stage("suppress", logits, ctx_of(ids, 12), token_ids=tokens), ref)


@pytest.mark.parametrize("after_bos", [False, True])
def test_suppress_at_start_matches_begin_suppress_tokens(after_bos):
    tokens = [2, 9, 40]
    for seed in range(2):
        logits = make_logits(seed)
        for length in (1, 2, 3, 12):
            ids = history(seed, length=length)
            for prompt in range(1, length + 1):
                # generate's begin index: the prompt length, one more after a forced BOS
                begin = prompt + (after_bos and prompt == 1)
                ref = hf.SuppressTokensAtBeginLogitsProcessor(tokens, begin)(ids, logits.clone())
                ours = apply_stage("suppress_at_start", logits, ctx_of(ids, prompt), token_ids=tokens,
                                   after_bos=after_bos)
                same(ours, ref)


def test_suppress_at_start_learns_of_force_bos_from_the_recipe():
    assert lower("force_bos 5 | suppress_at_start 5").stages[1].params["after_bos"] is True
    assert lower("suppress_at_start 5").stages[0].params["after_bos"] is False


@pytest.mark.parametrize("token", [0, 5, 63])
def test_force_bos_matches_forced_bos_token_id(token):
    for seed in range(2):
        logits = make_logits(seed)
        for length in (1, 2, 12):
            ids = history(seed, length=length)
            ref = hf.ForcedBOSTokenLogitsProcessor(token)(ids, logits.clone())
            same(apply_stage("force_bos", logits, ctx_of(ids, 1), token=token), ref)
    assert apply_stage("force_bos", logits, ctx_of(history(0, length=1), 1), token=token).argmax(-1).eq(token).all()


@pytest.mark.parametrize("eos", EOS_SETS)
def test_force_eos_matches_forced_eos_token_id_at_max(eos):
    for seed in range(2):
        ids, logits = history(seed), make_logits(seed)
        for prompt in (4, 8, 12):
            for max_new in (1, 5, 9, 12):  # generate: max_length = prompt + max_new_tokens
                ref = hf.ForcedEOSTokenLogitsProcessor(prompt + max_new, eos)(ids, logits.clone())
                same(apply_stage("force_eos", logits, ctx_of(ids, prompt, eos, max_new)), ref)


def same_but_nan(ours: torch.Tensor, ref: torch.Tensor, logits: torch.Tensor, rtol: float = 0.0) -> None:
    """Equal where the reference is a number; where it is NaN (an EOS logit at -inf plus an
    infinite penalty), ours keeps the -inf it was given."""
    nan = ref.isnan()
    assert torch.equal(ours[nan], logits[nan]) and bool(logits[nan].isneginf().all())
    same(ours[~nan], ref[~nan]) if rtol == 0 else torch.testing.assert_close(ours[~nan], ref[~nan], rtol=rtol, atol=0)


@pytest.mark.parametrize("start, factor, rtol", [
    (0, 1.5, 0.0), (3, 1.5, 0.0), (2, 0.75, 0.0), (0, 3.0, 0.0),
    (5, 1.1, 1e-5), (1, 0.9, 1e-5),  # F**k in float32, the reference's in float64: equal to rounding
])
def test_lengthdecay_matches_exponential_decay_length_penalty(start, factor, rtol):
    fired = 0
    for seed in range(3):
        ids, logits = history(seed), make_logits(seed)
        logits[2, 2] = float("-inf")  # EOS already removed: the reference makes it NaN
        for eos in EOS_SETS:
            for prompt in (1, 4, 8, 12):
                ref = hf.ExponentialDecayLengthPenalty((start, factor), eos, prompt)(ids, logits.clone())
                ours = apply_stage("lengthdecay", logits, ctx_of(ids, prompt, eos), start=start, factor=factor)
                same_but_nan(ours, ref, logits, rtol)
                fired += not torch.equal(ours.nan_to_num(), logits.nan_to_num())
    assert fired


def test_lengthdecay_stays_finite_where_the_factor_overflows():
    ids, logits = history(0), make_logits(0)
    ours = apply_stage("lengthdecay", logits, ctx_of(ids, 2), start=0, factor=1e20)  # F**10 > float32
    assert not ours.isnan().any() and not ours.isposinf().any()
    assert (ours[:, 2] >= logits[:, 2]).all()


def test_renormalize_matches_logit_normalization():
    for seed in range(3):
        ids, logits = history(seed), make_logits(seed)
        same(apply_stage("renormalize", logits, ctx_of(ids, 12)), hf.LogitNormalization()(ids, logits.clone()))


def test_bias_adds_up_on_one_token_in_the_references_order():
    """(5, 3) and (4, 5, 3) both complete with token 3, which (3,) biases too: the reference
    adds the one-token bias first, and in float32 1e8 - 1e8 + 3 is not -1e8 + 3 + 1e8."""
    ids = torch.tensor([[1, 4, 5]])
    logits = torch.zeros(1, 8)
    biases = {(5, 3): -1e8, (4, 5, 3): 3.0, (3,): 1e8}
    ref = hf.SequenceBiasLogitsProcessor(dict(biases))(ids, logits.clone())
    ours = apply_stage("bias", logits, ctx_of(ids, 3), ids=[list(s) for s in biases], b=list(biases.values()))
    assert ref[0, 3] == 3.0
    same(ours, ref)


def test_multi_token_bias_matches_sequence_bias_on_random_sequences():
    import random

    for seed in range(40):
        rnd = random.Random(seed)
        ids = history(seed, length=rnd.randint(1, 8), high=4)
        logits = make_logits(seed)
        seqs = {tuple(rnd.randint(0, 3) for _ in range(rnd.randint(1, 9))): rnd.choice([-2.0, 0.1, 0.2, 3.0])
                for _ in range(rnd.randint(1, 6))}
        ref = hf.SequenceBiasLogitsProcessor(dict(seqs))(ids, logits.clone())
        ours = apply_stage("bias", logits, ctx_of(ids, 1), ids=[list(s) for s in seqs], b=list(seqs.values()))
        same(ours, ref)


# -- rows with different histories, as the engine lays them out ---------------------------

def rows_of(new: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(new)
    return [torch.randint(0, 6, (n + new,), generator=g).tolist() for n in (1, 2, 3, 5, 6, 8, 9, 11, 12)]


@pytest.mark.parametrize("new", [0, 1, 3])
@pytest.mark.parametrize("stage, params, ref", [
    ("minlen", {"n": 6}, lambda p: hf.MinLengthLogitsProcessor(6, [2])),
    ("force_bos", {"token": 4}, lambda p: hf.ForcedBOSTokenLogitsProcessor(4)),
    ("suppress_at_start", {"token_ids": [2, 4], "after_bos": True},
     lambda p: hf.SuppressTokensAtBeginLogitsProcessor([2, 4], p + (p == 1))),
    ("force_eos", {}, lambda p: hf.ForcedEOSTokenLogitsProcessor(p + 4, [2])),
    ("lengthdecay", {"start": 1, "factor": 1.5}, lambda p: hf.ExponentialDecayLengthPenalty((1, 1.5), [2], p)),
])
def test_rows_with_different_histories_each_match_their_own_reference(new, stage, params, ref):
    rows = rows_of(new)
    logits = make_logits(new)
    ours = apply_stage(stage, logits, padded_context(rows, slots=20, new=new, eos=[2], max_new=4), **params)
    for i, r in enumerate(rows):
        row = logits[i:i + 1]  # lengthdecay: where the reference gives NaN, ours keeps -inf
        same_but_nan(ours[i:i + 1], ref(len(r) - new)(torch.tensor([r]), row.clone()), row)


# -- generate(), all of them together -----------------------------------------------------

BIASED = {"a": [7, 20], "b": [13, 7, 21], "c": [22]}  # texts' ids: the checkpoint has no tokenizer
SAME_LENGTH = [[1, 5, 9, 13, 7], [1, 22, 3, 30, 8], [1, 40, 41, 13, 7]]  # min_length counts padding there
ONE_TOKEN = [[1], [1]]
RECIPES = {
    "same_length": ('bias "a" 4.0 | bias "b" 3.0 | bias "c" -2.0 | minlen 8 | force_eos '
                    "| lengthdecay start=6 factor=1.25 | suppress 11 30 | suppress_at_start 13 | renormalize"),
    "one_token": "minnew 3 | force_bos 5 | suppress_at_start 5 9",
}


def with_ids(plan):
    """The plan with each bias text replaced by its ids (what a tokenizer would give)."""
    stages = tuple(replace(st, params={"ids": BIASED[st.params["text"]], "b": st.params["b"]})
                   if "text" in st.params else st for st in plan.stages)
    return replace(plan, stages=stages)


def reference_kwargs(recipe: str, eos: int) -> dict:
    """What `decode explain --hf` says to pass, less what hf_generate sets itself."""
    kw = hf_kwargs(recipe, encode=lambda text: BIASED[text])
    kw["forced_eos_token_id"] = eos if kw["forced_eos_token_id"] is not None else None  # the model's EOS
    return {k: v for k, v in kw.items() if k not in ("do_sample", "max_new_tokens", "top_k", "top_p", "temperature")}


@pytest.mark.parametrize("which", RECIPES)
@pytest.mark.parametrize("search", ["greedy", "beam 4"])
def test_generate_with_the_stages_matches_transformers(models, search, which):  # noqa: F811
    from test_search_parity import EOS, MAX_NEW, check, hf_generate

    hf_model, ours = models
    prompts = SAME_LENGTH if which == "same_length" else ONE_TOKEN
    recipe = f"{search} | {RECIPES[which]} | max {MAX_NEW}"
    kw = reference_kwargs(recipe, EOS)
    seqs, scores = hf_generate(hf_model, prompts, **kw)
    out = decode.generate(ours, with_ids(lower(recipe)), prompts, compile=False)
    check(out, seqs, scores)
    texts = [s.ids for c in out for s in c.sequences]
    if which == "one_token":
        assert all(t[0] == 5 and t[1] not in (5, 9) for t in texts)
    else:
        assert all(t[-1] == EOS for t in texts)  # lengthdecay's doing (beam), or force_eos's at max (greedy)


def test_the_stages_compiled_equal_eager_in_one_step(models):  # noqa: F811
    _, ours = models
    recipe = f"sample 2 | {RECIPES['same_length']} | force_bos 5 | minnew 3 | max 10"
    plan = with_ids(lower(recipe))
    prompts = [[1], [1, 5, 9, 13, 7]]
    eager = decode.generate(ours, plan, prompts, seed=3, compile=False)
    compiled = decode.generate(ours, plan, prompts, seed=3, compile=True)
    assert [[s.ids for s in c.sequences] for c in compiled] == [[s.ids for s in c.sequences] for c in eager]
    assert [s.score for c in compiled for s in c.sequences] == pytest.approx(
        [s.score for c in eager for s in c.sequences], abs=1e-5)
    assert all(s.ids[0] == 5 for s in compiled[0].sequences)  # force_bos after the one-token prompt


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, where, words", [
    ("suppress -1", "-1", "out of range"),
    ("suppress_at_start 3 -2", "-2", "out of range"),
    ("suppress", "suppress", "missing argument"),
    ("force_bos -3", "-3", "out of range"),
    ("force_bos 1.5", "1.5", "whole number"),
    ("minnew -1", "-1", "out of range"),
    ("minlen -4", "-4", "out of range"),
    ("lengthdecay start=-1 factor=1.5", "start=-1", "out of range"),
    ("lengthdecay start=2 factor=0", "factor=0", "out of range"),
    ("lengthdecay start=2", "lengthdecay start=2", "missing argument"),
    ("force_eos 2", "2", "takes no positional values"),
])
def test_out_of_range_settings_are_check_errors_with_a_caret(text, where, words):
    with pytest.raises(RecipeError) as err:
        parse(text)
    assert words in err.value.message
    assert err.value.span.slice(text) == where


@pytest.mark.parametrize("recipe", ["suppress 3 61", "suppress_at_start 61", "force_bos 99"])
def test_token_ids_outside_the_vocabulary_stop_the_run_naming_the_clause(models, recipe):  # noqa: F811
    _, ours = models
    name = recipe.split()[0]
    with pytest.raises(ValueError, match=f"'{name}' names token id (61|99), outside this model's vocabulary "
                                         r"\(ids 0..60\); give ids below 61"):
        decode.generate(ours, f"{recipe} | max 2", [[1, 2]], compile=False)


def test_the_cli_says_which_clause_has_a_token_id_outside_the_vocabulary(capsys):
    assert main(["run", "suppress 5 4096 | max 2", "--prompt-ids", "1,2", "--no-compile"]) == 1
    err = capsys.readouterr().err
    assert "'suppress' names token id 4096" in err and "ids 0..4095" in err and "Traceback" not in err


def test_explain_hf_prints_the_processors_arguments(capsys):
    recipe = ("beam 4 | minlen 8 | force_bos 5 | force_eos | lengthdecay start=6 factor=1.5 | suppress 11 30"
              " | suppress_at_start 13 | renormalize")
    assert main(["explain", "--hf", recipe]) == 0
    out = capsys.readouterr().out
    for kwarg in ("min_length=8,", "forced_bos_token_id=5,", "forced_eos_token_id=model.generation_config.eos_token_id,",
                  "exponential_decay_length_penalty=(6, 1.5),", "suppress_tokens=[11, 30],",
                  "begin_suppress_tokens=[13],", "renormalize_logits=True,"):
        assert kwarg in out


def test_explain_hf_refuses_what_transformers_orders_differently():
    from decode.dsl import hf_reference

    assert "overrides min_length=9" in hf_reference("minlen 9 | minnew 5").reason
    assert "into NaN past 3 new tokens" in hf_reference("minnew 5 | lengthdecay start=3 factor=1.5").reason
    assert "into NaN" in hf_reference("minlen 6 | lengthdecay start=3 factor=1").reason
    assert hf_reference("minnew 4 | lengthdecay start=3 factor=1.5").kwargs["min_new_tokens"] == 4
    assert hf_reference("minnew 5 | lengthdecay start=3 factor=0.5").kwargs is not None  # -inf stays -inf
    assert hf_reference("minlen 6 | minnew 5").kwargs["min_length"] == 6  # a prompt has >= 1 token
    assert "do not commute" in hf_reference("beam 4 | renormalize | suppress 3").reason
    assert "renormalize before suppress" in parse("renormalize | suppress 3").warnings[0].message

