"""Strings a recipe matches as token ids, checked against how the words appear in running text.

`ban "lord"` forbids the ids "lord" encodes to at the start of a text; in running text the
word follows a space and often encodes otherwise (" lord" is one piece), so the ban would
catch nothing there. With the model's tokenizer, `decode check --model M` warns and names
the spelling that matches mid-text.

    >>> midtext_warnings(parse('ban "lord"'), lambda s: tok.encode(s, bos=False))[0].message
    '"lord" encodes to ids [4023, 364] on its own, but after a space in running text the word is ids [460], ...'
"""
from __future__ import annotations

from typing import Callable, Sequence

from decode.dsl.errors import RecipeWarning
from decode.dsl.ir import Arg, Clause, Recipe

Encode = Callable[[str], Sequence[int]]


def midtext_warnings(recipe: Recipe, encode: Encode) -> list[RecipeWarning]:
    """One warning per token-matched string (Param.tokens) whose ids differ from its ids mid-text."""
    out = []
    for clause in recipe.clauses:
        for arg in _token_args(clause):
            word = arg.value
            alone, mid = list(encode(word)), _in_running_text(encode, word)
            if mid is None or alone == mid:
                continue
            spaced = " " + word
            fix = (f'write "{spaced}" to match it there (add it beside "{word}" to match both)'
                   if list(encode(spaced)) == mid else f"give the ids {mid} instead")
            out.append(RecipeWarning(
                f'"{word}" encodes to ids {alone} on its own, but after a space in running text the '
                f"word is ids {mid}, so '{clause.name}' will not match it there: {fix}", arg.span))
    return out


def _token_args(clause: Clause) -> list[Arg]:
    """The written string arguments of `clause` whose parameter is matched as token ids."""
    spec, given = clause.spec, [a for a in clause.args if a.key is None]
    found = []
    for i, arg in enumerate(given):
        if spec.positional:
            p = spec.positional[min(i, len(spec.positional) - 1)]
            if p.tokens and isinstance(arg.value, str):
                found.append(arg)
    for arg in clause.args:
        p = next((k for k in spec.keywords if k.name == arg.key), None) if arg.key else None
        if p is not None and p.tokens and isinstance(arg.value, str):
            found.append(arg)
    return found


def _in_running_text(encode: Encode, word: str) -> list[int] | None:
    """The ids `word` has after 'a ' in a text, or None when the split is not clean (a word
    that starts with a space, or one that merges with the space before it)."""
    if not word or word[0].isspace():
        return None
    before, whole = list(encode("a")), list(encode("a " + word))
    if whole[:len(before)] != before:
        return None
    return whole[len(before):]
