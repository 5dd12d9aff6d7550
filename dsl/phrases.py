"""The phrases of `force` (constrained beam search): a "text", `ids(N, ...)` (token ids) or
`any(...)` of those (one of them must appear: transformers' DisjunctiveConstraint).

`phrase_value` checks one written value (check.py calls it for a Param of type "phrase");
`constraints` gives what the compiler builds its tries from.

    >>> constraints(("dog", Call("any", ("big", Call("ids", (5, 7))))))
    [['dog'], ['big', (5, 7)]]
"""
from __future__ import annotations

from typing import Any

from decode.dsl.errors import RecipeError
from decode.dsl.spec import Call, spell_value

ANY, IDS = "any", "ids"
_FORMS = 'a "text", ids(N, ...) or any("a", "b", ...)'


def phrase_value(where: str, arg: Any) -> "str | Call":
    """One checked phrase (the Arg `arg` as written); a RecipeError points at what is wrong."""
    value, span = arg.value, arg.span
    if isinstance(value, Call) and value.name == ANY:
        options = [_option(where, v, s, span) for v, s in _parts(value, span)]
        if len(options) < 2:
            raise RecipeError(f"{where}: any(...) needs at least two phrases, one of which must "
                              "appear; a single phrase is written on its own", span,
                              suggestion=spell_value(options[0]) if options else None)
        for i, o in enumerate(options):
            if o in options[:i]:
                raise RecipeError(f"{where}: any(...) lists {spell_value(o)} twice; transformers' "
                                  "DisjunctiveConstraint refuses that: drop one", value.spans[i])
        return Call(ANY, tuple(options), value.spans)
    return _option(where, value, span, span)


def _parts(call: Call, span) -> list:
    return list(zip(call.args, call.spans or (span,) * len(call.args)))


def _option(where: str, value: Any, span, outer) -> "str | Call":
    if isinstance(value, str):
        if not value:
            raise RecipeError(f"empty phrase: {where} must not be empty; write some text between "
                              "the quotes", span)
        return value
    if isinstance(value, Call) and value.name == IDS:
        for v, s in _parts(value, span):
            if not isinstance(v, int) or v < 0:
                raise RecipeError(f"{where}: ids(...) holds token ids, whole numbers >= 0; found "
                                  f"{spell_value(v)}", s)
        if not value.args:
            raise RecipeError(f"empty phrase: {where}: ids() needs at least one token id", span)
        return Call(IDS, value.args, value.spans)
    if isinstance(value, Call) and value.name == ANY:
        raise RecipeError(f"{where}: any(...) cannot hold another any(...); list the phrases in "
                          "one any(...)", span)
    found = value.spell() if isinstance(value, Call) else spell_value(value)
    hint = f"ids({value})" if isinstance(value, int) and value >= 0 else None
    raise RecipeError(f"wrong type: {where} must be {_FORMS}, found {found}", span, suggestion=hint)


def constraints(phrases: tuple) -> list[list["str | tuple[int, ...]"]]:
    """Per constraint, its options (one for a phrase, several for any(...)): a text or ids."""
    def one(p: "str | Call") -> "str | tuple[int, ...]":
        return tuple(p.args) if isinstance(p, Call) else p

    return [[one(o) for o in p.args] if isinstance(p, Call) and p.name == ANY else [one(p)]
            for p in phrases]


def shortest(options: list) -> int | None:
    """The fewest tokens an option given as ids has (None: all are texts, tokenised later)."""
    lens = [len(o) for o in options if isinstance(o, tuple)]
    return min(lens) if len(lens) == len(options) else None
