"""The recipe language: text -> checked `Recipe` IR. Imports no torch.

    >>> from decode.dsl import parse, fmt
    >>> fmt("topp 0.9 temp 0.7 | beam 4")
    'beam 4 | topp 0.9 | temp 0.7'
"""
from decode.dsl.catalogue import CATALOGUE, lookup, register
from decode.dsl.check import parse, read_recipe
from decode.dsl.errors import RecipeError, RecipeWarning, format_error
from decode.dsl.format import fmt
from decode.dsl.ir import LANG_VERSION, Arg, Clause, Recipe, Span
from decode.dsl.reference import NoReference, hf_kwargs, hf_reference
from decode.dsl.spec import HF, REQUIRED, ClauseSpec, Param, Problem

__all__ = [
    "parse", "fmt", "read_recipe", "RecipeError", "RecipeWarning", "format_error",
    "CATALOGUE", "lookup", "register", "ClauseSpec", "Param", "REQUIRED", "HF", "Problem",
    "Recipe", "Clause", "Arg", "Span", "LANG_VERSION",
    "hf_kwargs", "hf_reference", "NoReference",
]
