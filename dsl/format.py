"""`fmt`: the canonical one-line form of a recipe.

    >>> fmt("topp .90 temp 0.7  # nucleus\\nbeam 4 lenpen=1")
    'beam 4 | topp 0.9 | temp 0.7'
"""
from __future__ import annotations

from decode.dsl.check import parse
from decode.dsl.ir import Recipe


def fmt(recipe: "Recipe | str") -> str:
    """Canonical form: search first (explicit `greedy`), modifiers, logit stages in written
    order, then `max`, `stop`, `seed`; defaults left out; canonical number spelling."""
    return parse(recipe).canonical
