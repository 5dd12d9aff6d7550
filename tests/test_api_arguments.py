"""The Python API checks its arguments (compiler/arguments.py, shared by generate, steps and
transform): a wrong one is a TypeError or ValueError naming it and the fix, never a silent
conversion or an error from deep inside. `decode.transform` takes the model (or its EOS ids
and tokenizer) and says which keyword a clause needs.
"""
from __future__ import annotations

import pytest
import torch

import decode
from table_model import TableModel

EOS = 7


class Chars:
    """A decode-style tokenizer (encode takes bos=): one id per character."""

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return [ord(c) % EOS for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(97 + i) for i in ids)


@pytest.fixture(scope="module")
def table():
    return TableModel.random(2)


@pytest.fixture(scope="module")
def with_tokenizer():
    m = TableModel.random(2)
    m.tokenizer = Chars()
    return m


def generate(model, recipe="greedy | max 2", prompts=([0],), **kw):
    return decode.generate(model, recipe, prompts if not isinstance(prompts, tuple) else list(prompts),
                           compile=False, **kw)


# -- generate ------------------------------------------------------------------------------------

def test_a_bare_string_as_prompts_is_refused_with_the_list_to_write(with_tokenizer):
    with pytest.raises(TypeError) as err:
        generate(with_tokenizer, prompts="ROMEO:")  # was: six one-character prompts
    assert str(err.value) == ("prompts must be a list of strings or of token-id lists; got a str: "
                              "wrap it as ['ROMEO:']")


def test_an_empty_prompt_list_says_to_give_a_prompt(table):
    with pytest.raises(ValueError, match=r"^prompts is empty: give at least one prompt, e.g. \['ROMEO:'\]$"):
        generate(table, prompts=[])  # was: "max() arg is an empty sequence"


@pytest.mark.parametrize("prompts, message", [
    ([[1.7, 2.2]], r"prompts\[0\]\[0\] is a float \(1.7\); token ids must be ints: a float is refused, "
                   "not truncated"),
    ([[0, True]], r"prompts\[0\]\[1\] is a bool \(True\); token ids must be ints$"),
    ([[0], ["ROMEO:"]], r"prompts\[1\] must be one string or one list of token ids; got a list of prompts"),
    ([[0], None], r"prompts\[1\] must be a string or a list of token ids; got None"),
    ([1, 2], r"got a list of ints: for one prompt of token ids wrap it as \[\[1, 2\]\]"),
    ([[]], r"prompts\[0\] is empty: give at least one token"),
    ({"a": 1}, r"prompts must be a list of strings or of token-id lists; got a dict"),
])
def test_float_bool_and_misshapen_token_ids_are_refused_not_truncated(table, prompts, message):
    with pytest.raises((TypeError, ValueError), match=message):
        generate(table, prompts=prompts)


@pytest.mark.parametrize("seed, error, message", [
    (1.5, TypeError, r"^seed must be an int in 0..18446744073709551615 or None; got a float \(1.5\)$"),
    (True, TypeError, r"got a bool \(True\)"),
    ("3", TypeError, r"got a str"),
    (-1, ValueError, r"^seed must be in 0..18446744073709551615; got -1$"),
    (2**64, ValueError, r"got 18446744073709551616"),
])
def test_a_seed_must_be_an_int_in_the_seed_clause_range(table, seed, error, message):
    with pytest.raises(error, match=message):
        generate(table, "sample | max 2", seed=seed)
    with pytest.raises(error, match=message):
        decode.steps(table, "sample | max 2", [0], seed=seed)
    with pytest.raises(error, match=message.replace("^seed", r"^seeds\[0\]")):
        generate(table, "sample | max 2", seeds=[seed])


def test_a_recipe_that_is_not_one_is_a_type_error_naming_the_argument(table):
    message = (r"^recipe must be a recipe text such as 'beam 4 \| max 32', a decode.parse\(...\) result or "
               "a Plan; got None$")
    with pytest.raises(TypeError, match=message):
        generate(table, None)  # was: AttributeError from inside the compiler
    with pytest.raises(TypeError, match=message):
        decode.steps(table, None, [0])
    with pytest.raises(TypeError, match=message):
        decode.transform(None, torch.zeros(1, 8), torch.zeros(1, 1, dtype=torch.long))


def test_a_model_that_is_not_one_says_to_load_it():
    with pytest.raises(TypeError, match=r"^model must be a model from decode.load\(...\); got a str: load it "
                                        r"with decode.load\('llama'\)$"):
        decode.generate("llama", "greedy", [[0]])
    with pytest.raises(TypeError, match="model must be a model from decode.load"):
        decode.steps(None, "greedy", [0])


def test_good_arguments_of_every_accepted_kind_still_decode(table, with_tokenizer):
    plain = [s.ids for s in generate(table, prompts=[[0, 3]])[0].sequences]
    assert [s.ids for s in generate(table, prompts=torch.tensor([[0, 3]]))[0].sequences] == plain
    assert [s.ids for s in generate(table, prompts=[torch.tensor([0, 3])])[0].sequences] == plain
    assert [s.ids for s in generate(table, decode.parse("greedy | max 2"), [(0, 3)])[0].sequences] == plain
    assert len(generate(with_tokenizer, prompts=["ab", [1]], seed=2**64 - 1)) == 2


# -- steps ----------------------------------------------------------------------------------------

def test_steps_checks_its_arguments_on_the_call_not_on_the_first_step(table):
    with pytest.raises(TypeError, match=r"^prompt must be one string or one list of token ids; got a list "
                                        r"of prompts: give one, e.g. 'ROMEO:'$"):
        decode.steps(table, "greedy", ["ROMEO:"])  # no next(): the call itself refuses
    with pytest.raises(TypeError, match=r"prompt\[1\] is a float \(2.2\)"):
        decode.steps(table, "greedy", [1, 2.2])
    assert [st.t for st in decode.steps(table, "greedy | max 2", [0])] == [0, 1]


# -- transform ------------------------------------------------------------------------------------

LOGITS, IDS = torch.zeros(2, 8), torch.tensor([[1, 2], [3, 4]])


def test_transform_minlen_needs_eos_ids_and_says_which_keyword_gives_them(table):
    with pytest.raises(ValueError) as err:
        decode.transform("minlen 5", LOGITS, IDS)  # was: silently nothing
    assert str(err.value) == ("`minlen` needs the end-of-sequence ids: pass model= (a model from "
                              "decode.load), or eos= (an id or a list, e.g. eos=[2])")
    for kw in ({"model": table}, {"eos": EOS}, {"eos": [EOS]}, {"eos": torch.tensor([EOS])}):
        out = decode.transform("minlen 5", LOGITS, IDS, **kw)
        assert out[:, EOS].isneginf().all() and out[:, :EOS].eq(0).all()


def test_transform_ban_and_bias_need_a_tokenizer_and_take_the_models(table, with_tokenizer):
    with pytest.raises(ValueError) as err:
        decode.transform('bias "a" 2', LOGITS, IDS)  # was: "turning text into token ids needs ..."
    assert str(err.value) == ("`bias` needs a tokenizer to turn its text into token ids: pass model= (a "
                              "model from decode.load), or tokenizer= (a decode model's .tokenizer)")
    with pytest.raises(ValueError, match=r"^`ban` needs a tokenizer to turn its text into token ids and the "
                                         r"end-of-sequence ids: pass model="):
        decode.transform('ban "a"', LOGITS, IDS)
    with pytest.raises(ValueError, match=r"^`ban` needs a tokenizer .*: the model given has none; pass "
                                         "tokenizer="):
        decode.transform('ban "a"', LOGITS, IDS, model=table)
    a = Chars().encode("a")[0]
    by_model = decode.transform('ban "a" | bias "b" 2', LOGITS, IDS, model=with_tokenizer)
    by_keywords = decode.transform('ban "a" | bias "b" 2', LOGITS, IDS, tokenizer=Chars(), eos=EOS)
    assert torch.equal(by_model, by_keywords) and by_model[:, a].isneginf().all()
    assert by_model[:, Chars().encode("b")[0]].eq(2).all()


@pytest.mark.parametrize("logits, ids, kw, error, message", [
    (LOGITS[0], IDS, {}, ValueError, r"logits must be \[rows, vocab\]; got shape \[8\]: for one row pass "
                                     r"logits\[None\]"),
    (LOGITS.long(), IDS, {}, TypeError, r"logits must be a float tensor \[rows, vocab\]; got a Tensor of "
                                        "dtype torch.int64"),
    (LOGITS, [[1, 2]], {}, TypeError, r"input_ids must be an integer tensor \[rows, tokens\], e.g. torch"),
    (LOGITS, IDS.float(), {}, TypeError, r"input_ids must be an integer tensor .* got a tensor of dtype "
                                         "torch.float32"),
    (LOGITS, IDS[:1], {}, ValueError, r"with the rows of logits \(2\); got shape \[1, 2\]"),
    (LOGITS, IDS[:, :0], {}, ValueError, r"input_ids must hold at least one token per row .* got shape \[2, 0\]"),
    (LOGITS, IDS + 8, {}, ValueError, r"input_ids holds token id 9, outside the logits' vocabulary "
                                      r"\(ids 0..7\)"),
    (LOGITS, IDS, {"eos": 1.5}, TypeError, r"eos must be a token id or a list of them; got a float \(1.5\)"),
    (LOGITS, IDS, {"eos": [2, 1.5]}, TypeError, r"eos\[1\] is a float \(1.5\)"),
    (LOGITS, IDS, {"eos": 99}, ValueError, r"eos holds token id 99, outside the logits' vocabulary"),
    (LOGITS, IDS, {"tokenizer": "gpt2"}, TypeError, r"tokenizer must be decode's .* got a str"),
])
def test_transform_refuses_misshapen_tensors_and_keywords(logits, ids, kw, error, message):
    with pytest.raises(error, match=message):
        decode.transform("topk 2", logits, ids, **kw)
