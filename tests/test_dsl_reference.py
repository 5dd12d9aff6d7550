"""The transformers generate(...) equivalent of a recipe, or why there is none."""
import pytest

from decode.dsl import NoReference, hf_kwargs, hf_reference, parse
from decode.dsl.reference import NEUTRAL, TokenIds


def changed(text, **kw):
    """The kwargs that differ from the neutral set."""
    return {k: v for k, v in hf_kwargs(text, **kw).items() if NEUTRAL[k] != v}


def test_greedy_switches_off_everything():
    kw = hf_kwargs("greedy")
    assert kw == NEUTRAL and kw["do_sample"] is False and kw["top_k"] is None


def test_beam_search():
    assert changed("beam 4 lenpen=0.6 early=never return=2 | max 32") == {
        "num_beams": 4, "length_penalty": 0.6, "early_stopping": "never",
        "num_return_sequences": 2, "max_new_tokens": 32}
    assert hf_kwargs("beam 4")["num_return_sequences"] == 4


def test_diverse_beam_search():
    assert changed("beam 6 | diverse groups=3 penalty=0.5") == {
        "num_beams": 6, "num_beam_groups": 3, "diversity_penalty": 0.5, "num_return_sequences": 6}


def test_sampling_stages_in_the_reference_order():
    assert changed("sample 2 | temp 0.7 | topk 40 | topp 0.9 | minp 0.05") == {
        "do_sample": True, "num_return_sequences": 2, "temperature": 0.7, "top_k": 40,
        "top_p": 0.9, "min_p": 0.05}


def test_commuting_stages_may_be_written_in_any_order():
    # temperature keeps ranks, so top-k before it is the same as after it
    assert changed("topk 50 | temp 0.5")["top_k"] == 50
    # -inf masks commute with pointwise maps
    assert changed("temp 0.5 | ban \"x\" | repetition 1.2")["repetition_penalty"] == 1.2
    # T > 0 keeps signs, so the CTRL penalty commutes with temperature
    assert changed("temp 0.5 | repetition 1.2")["temperature"] == 0.5


def test_processors_and_token_ids():
    kw = hf_kwargs('bias "a" 1 | bias "a" 0.5 | repetition 1.3 | norepeat 3 | ban "x" "yz" | minlen 5 | minnew 4',
                   encode=lambda s: [ord(c) for c in s])
    assert kw["sequence_bias"] == {(97,): 1.5} and kw["repetition_penalty"] == 1.3
    assert kw["no_repeat_ngram_size"] == 3 and kw["min_length"] == 5 and kw["min_new_tokens"] == 4
    assert kw["bad_words_ids"] == [[120], [121, 122]]
    assert hf_kwargs('ban "x"')["bad_words_ids"] == [TokenIds("x")]


def test_stop_strings_and_seed_give_notes():
    ref = hf_reference('sample | stop "\\n" | seed 3')
    assert ref.kwargs["stop_strings"] == ["\n"]
    assert any("tokenizer" in n for n in ref.notes) and any("manual_seed(3)" in n for n in ref.notes)


def test_temp_zero_is_argmax():
    assert changed("temp 0") == {}
    ref = hf_reference("temp 0 | topp 0.9")
    assert ref.kwargs["do_sample"] is False and ref.kwargs["top_p"] == 1.0


@pytest.mark.parametrize("text,reason", [
    ("sbeam 4", "transformers has no equivalent of 'sbeam'"),
    ("topnsigma 1.0", "transformers has no equivalent of 'topnsigma'"),
    ("presence 0.5", "transformers has no equivalent of 'presence'"),
    ("frequency 0.5", "transformers has no equivalent of 'frequency'"),
    ("beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7",
     "transformers rejects diverse (group) beam search with sampling"),
    ("beam 4 | diverse groups=2", "transformers rejects num_beam_groups > 1 with diversity_penalty=0"),
    ("topp 0.9 temp 0.7", "'topp 0.9' is written before 'temp 0.7', but transformers always applies "
                          "temp first"),
    ("temp 0.7 | bias \"x\" 1", "'temp 0.7' is written before 'bias \"x\" 1.0'"),
    ("topk 5 | ban \"x\"", "'topk 5' is written before 'ban \"x\"'"),
    ("topp 0.9 keep=3", "no min_tokens_to_keep"),
    ("temp 0 | typical 0.5", "typical may drop the most likely token"),
    ("sample 3 | temp 0 | topp 0.9", "temp 0 with 'sample 3'"),
])
def test_no_reference_and_why(text, reason):
    ref = hf_reference(text)
    assert ref.kwargs is None and reason in ref.reason
    with pytest.raises(NoReference) as info:
        hf_kwargs(parse(text))
    assert info.value.reason == ref.reason


def test_kwargs_pass_transformers_strict_validation():
    transformers = pytest.importorskip("transformers")
    encode = lambda s: [ord(c) % 1000 + 1 for c in s]  # noqa: E731
    for text in ["greedy", "beam 4 lenpen=0.6 early=never return=2", "beam 4 | diverse groups=2 penalty=0.5",
                 "sample 3 | temp 0.7 | topk 40 | topp 0.9 | minp 0.1 | typical 0.9 | epsilon 0.001 | eta 0.001",
                 'bias "q" 2 | repetition 1.2 | norepeat 3 | ban "x" | minlen 4 | max 20 | stop "a"',
                 "beam 4 | topp 0.9",
                 "beam 4 | minnew 3 | force_bos 5 | force_eos | lengthdecay start=2 factor=1.5 | suppress 7 8"
                 " | suppress_at_start 9 | renormalize"]:
        transformers.GenerationConfig(**hf_kwargs(text, encode=encode)).validate(strict=True)
