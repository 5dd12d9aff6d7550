"""Everything clause-specific hangs off the clause's catalogue entry: a clause declared with
`register` gets each behaviour from its fields alone, exactly as the built-in clause that
has the same fields does."""
import pytest

from decode.dsl import (CATALOGUE, HF, ClauseSpec, Param, Problem, RecipeError, fmt, hf_kwargs, hf_reference,
                        parse, register)
from decode.dsl.reference import NEUTRAL

pytestmark = pytest.mark.usefixtures("restore_catalogue")


def error(text):
    with pytest.raises(RecipeError) as info:
        parse(text)
    e = info.value
    return e.message, (e.span.start, e.span.end), e.suggestion


def renamed(found, old, new):
    """An error as the clause `new` (of the same length) would get it in `old`'s place."""
    message, span, suggestion = found
    return message.replace(f"'{old}'", f"'{new}'"), span, suggestion


@pytest.mark.parametrize("text", ["greedy | {} 0.5", "sbeam 4 | {} 0.5", "sample 2 | {} 0.5",
                                  "beam 4 | {} 0.5 | diverse groups=2 penalty=1"])
def test_a_declared_beam_variant_is_rejected_like_siblings(text):
    register(ClauseSpec("reranked", "modifier", "rescore the beams", beam_variant=True,
                        positional=(Param("gamma", "float", lo=0.0),), impl="plugin.reranked"))
    mine = error(text.format("reranked"))
    assert mine == renamed(error(text.format("siblings")), "siblings", "reranked")
    assert "'reranked'" in mine[0]


@pytest.mark.parametrize("text", ["sample 2 | {} groups=2", "beam 6 | {} groups=4",
                                  "beam 4 | {} groups=2 | siblings 0.5"])
def test_a_declared_beam_variant_with_groups_is_rejected_like_iterative(text):
    register(ClauseSpec("groupwise", "modifier", "beam groups", beam_variant=True,
                        keywords=(Param("groups", "int", lo=1),), impl="plugin.groupwise"))
    assert error(text.format("groupwise")) == renamed(error(text.format("iterative")), "iterative", "groupwise")


def test_a_modifier_that_is_no_beam_variant_needs_no_beam():
    register(ClauseSpec("reranked", "modifier", "rescore", positional=(Param("gamma", "float"),),
                        impl="plugin.reranked"))
    assert parse("greedy | reranked 0.5").modifiers[0]["gamma"] == 0.5


def test_a_declared_argmax_clause_makes_selection_argmax():
    register(ClauseSpec("freeze", "logit", "keep only the top token", argmax=lambda p: True,
                        argmax_doc="freeze", impl="plugin.freeze"))
    r = parse("topp 0.9 | freeze")
    assert not r.sampling
    assert r.sampling_reason == "argmax, because freeze means argmax (topp 0.9 cannot change the choice)"


def test_a_declared_check_points_at_the_argument_it_names():
    def check(c, clauses):
        return Problem("width too odd", key="w", suggestion="wide 2") if c["w"] % 2 else None

    register(ClauseSpec("wide", "logit", "w", positional=(Param("w", "int"),), check=check, impl="plugin.wide"))
    assert error("topk 3 | wide 3") == ("width too odd", (14, 15), "wide 2")
    assert parse("wide 4").stages[0]["w"] == 4


def test_a_declared_warning_is_given_with_the_clause_span():
    register(ClauseSpec("loud", "logit", "x", positional=(Param("v", "float"),), impl="plugin.loud",
                        warn=lambda c, clauses: "v=0 does nothing" if c["v"] == 0 else None))
    (w,) = parse("greedy | loud 0").warnings
    assert (w.message, w.span.start, w.span.end) == ("v=0 does nothing", 9, 15)
    assert parse("loud 1").warnings == ()


def test_a_declared_alias_is_suggested():
    register(ClauseSpec("cool", "logit", "x", positional=(Param("t", "float"),), aliases=("chill_factor",),
                        impl="plugin.cool"))
    assert error("chill_factor 0.5")[2] == "cool"


def test_a_declared_setting_is_read_by_name_and_left_out_at_its_default():
    register(ClauseSpec("budget", "limit", "stop after N seconds", setting="budget_s",
                        positional=(Param("n", "int", 60, lo=1),)))
    assert parse("budget 5").setting("budget_s") == 5 and parse("greedy").setting("budget_s") == 60
    assert fmt("budget 60 | topk 3") == "greedy | topk 3" and fmt("budget 5") == "greedy | budget 5"


def test_a_declared_clause_maps_to_transformers_through_its_entry():
    register(ClauseSpec("cool", "logit", "divide the logits by T", positional=(Param("t", "float", lo=0.1),),
                        sampling=True, impl="plugin.cool",
                        hf=HF(lambda p, ids, kw: {"temperature": p["t"]}, {"temperature": 1.0}, rank=5,
                              role="scale")))
    kw = hf_kwargs("sample 2 | cool 0.5")
    assert {k: v for k, v in kw.items() if NEUTRAL[k] != v} == {
        "do_sample": True, "num_return_sequences": 2, "temperature": 0.5}
    assert hf_kwargs("topk 5 | cool 0.5")["top_k"] == 5  # a scale keeps ranks: commutes with topk
    assert "transformers always applies cool first" in hf_reference("topp 0.9 | cool 0.5").reason


def test_every_clause_with_a_transformers_equivalent_maps_through_its_entry():
    assert [s.name for s in CATALOGUE.values() if (s.reference is None) != (s.hf is None)] == []
