"""Raw clauses -> a checked Recipe: names, types, ranges and the recipe-level rules.

    >>> parse("beam 4 | diverse groups=2 penalty=0.5").modifiers[0]["groups"]
    2
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import replace
from typing import Any, Iterable

from decode.dsl.errors import RecipeError, RecipeWarning, printable, unicode_problem
from decode.dsl.ir import Arg, Choices, Clause, Recipe, Span
from decode.dsl.parser import (NONFINITE, RawClause, Symbol, nonfinite_error, parse_raw,
                               string_pattern)
from decode.dsl import structured
from decode.dsl.catalogue import CATALOGUE, DEFAULT_SEARCH, clause_problem, lookup
from decode.dsl.phrases import phrase_value
from decode.dsl.spec import Call, ClauseSpec, Param, spell_value

def parse(text: "str | Recipe", base: str = "") -> Recipe:
    """Parse and check a recipe; every mistake is a RecipeError with a span. `base` is the
    folder the relative paths of its files (a schema, a grammar) start from: a .dec file's
    own folder (`folder_of`); "" (recipe text) is the working directory.

        >>> parse("beam 4 | max 32").max_new_tokens
        32
    """
    if isinstance(text, Recipe):
        return text
    if not isinstance(text, str):
        raise TypeError(f"parse() takes the recipe text, not {type(text).__name__}")
    try:
        bad = unicode_problem(text)
        if bad is not None:
            raise RecipeError(bad[1], Span(bad[0], bad[0] + 1))
        return _check(text, parse_raw(text), base)
    except RecipeError as err:
        err.text = text
        raise




def with_setting(recipe: Recipe, setting: str, value: int) -> Recipe:
    """`recipe` with the clause of engine setting `setting` set to `value`, as if written so
    (its text, fingerprint and checks are those of the new recipe).

        >>> with_setting(parse("beam 4 | max 64"), "max_new_tokens", 16).canonical
        'beam 4 | max 16'
    """
    from decode.dsl.catalogue import setting_spec

    name = setting_spec(setting).name
    kept = [c.canonical for c in recipe.clauses if c.name != name]
    return parse(" | ".join([*kept, f"{name} {value}"]), recipe.base)


def folder_of(arg: str) -> str:
    """The folder a RECIPE argument's relative file paths start from: a .dec file's own
    folder, "" (the working directory) for recipe text.

        >>> folder_of("recipes/json_schema.dec"), folder_of("beam 4")
        ('recipes', '')
    """
    return os.path.dirname(arg) if names_file(arg) else ""


def names_file(arg: str) -> bool:
    """Whether a RECIPE argument is a path rather than recipe text: it ends in `.dec` or holds a
    path separator, outside strings and comments, on one line without '|'.

        >>> names_file("recipes/beam.dec"), names_file('stop "</s>"')
        (True, False)
    """
    # strings (closed or not) and comments may hold anything, a '/' or '.dec' included
    code = re.sub(f'{string_pattern()}|"[^\\n]*|(^|[ \t])#.*', "", arg, flags=re.MULTILINE).strip()
    if "\n" in arg or "|" in code:
        return False
    return code.endswith(".dec") or "/" in code or os.sep in code


def read_recipe(arg: str) -> str:
    """The recipe text of `arg`: the contents of the file it names (see `names_file`), else `arg`.

    A leading byte order mark is dropped; undecodable bytes are kept (as surrogates) so that
    `parse` points at them. A path that names no file is a RecipeError over the argument.

        >>> read_recipe("beam 4 | topp 0.9")
        'beam 4 | topp 0.9'
    """
    if not names_file(arg):
        return arg
    if not os.path.exists(arg):
        err = RecipeError(f"no such recipe file '{printable(arg)}': give the path of an existing "
                          ".dec file, or the recipe text itself", Span(0, len(arg)))
        err.text = arg
        raise err
    with open(arg, encoding="utf-8-sig", errors="surrogateescape") as f:
        return f.read()


def suggest(word: str, choices: Iterable[str], aliases: dict[str, str] | None = None) -> str | None:
    """The closest spelling among `choices` (a "did you mean"), or None."""
    choices = list(choices)
    if aliases and word.lower() in aliases and aliases[word.lower()] in choices:
        return aliases[word.lower()]
    found = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _check(text: str, raw: list[RawClause], base: str = "") -> Recipe:
    folder = structured.BASE.set(base)  # what a constraint's check reads its file from
    try:
        return _checked(text, raw, base)
    finally:
        structured.BASE.reset(folder)


def _checked(text: str, raw: list[RawClause], base: str) -> Recipe:
    if not raw:
        raise RecipeError("empty recipe: write at least one clause, e.g. 'greedy' or 'beam 4'",
                          Span(0, len(text)), suggestion=DEFAULT_SEARCH)
    for rc in raw:  # `temp nan` reads as two clauses, and `nan` would only be "unknown"
        if rc.name.lower() in NONFINITE and lookup(rc.name) is None:
            raise nonfinite_error(rc.name, rc.name_span)
        swept = next((a for a in rc.args if isinstance(a.value, Choices)), None)
        if swept is not None:
            raise RecipeError(f"{swept.value.written} makes this recipe a sweep (one recipe per value), "
                              "and this takes one recipe: `decode run` runs every point of a sweep; in "
                              "Python, decode.sweep(text).points are the recipes", swept.span)
    clauses = []
    for i, rc in enumerate(raw):
        try:
            clauses.append(_clause(rc))
        except RecipeError as err:
            raise _bare_word_hint(err, rc, raw[i + 1] if i + 1 < len(raw) else None) from None
    clauses = tuple(clauses)
    _check_recipe(clauses)
    recipe = Recipe(clauses, text, tuple(_warnings(clauses)), base)
    recipe.file_digests  # noqa: B018  (read now, as checked: the fingerprint names these contents)
    return recipe


def _bare_word_hint(err: RecipeError, rc: RawClause, nxt: RawClause | None) -> RecipeError:
    """`ban foo` reads as two clauses; say that strings need quotes."""
    spec = lookup(rc.name)
    missing_str = spec is not None and any(p.type == "str" and p.required for p in spec.positional)
    if (err.message.startswith("missing argument") and missing_str and nxt is not None
            and lookup(nxt.name) is None and nxt.name_span.start > rc.span.end):
        word = spell_value(nxt.name)
        return RecipeError(f"missing argument: '{rc.name}' needs a \"string\"; a bare word starts a "
                           f"new clause, so write {rc.name} {word}", rc.span.cover(nxt.name_span),
                           suggestion=f"{rc.name} {word}")
    return err


# -- one clause ------------------------------------------------------------------------

def _clause(rc: RawClause) -> Clause:
    spec = lookup(rc.name)
    if spec is None:
        aliases = {a: s.name for s in CATALOGUE.values() for a in s.aliases}  # names other libraries use
        hint = suggest(rc.name, CATALOGUE, aliases)
        raise RecipeError(f"unknown clause '{rc.name}'", rc.name_span, suggestion=hint)
    values: dict[str, Any] = {}
    _positionals(spec, rc, values)
    _keywords(spec, rc, values)
    for p in spec.params:
        if p.name in values:
            continue
        if p.required:
            raise RecipeError(f"missing argument: '{rc.name}' needs {_what(p)}; write '{spec.usage()}'",
                              rc.span)
        values[p.name] = values[p.default_from] if p.default_from else p.default
    params = tuple((p.name, values[p.name]) for p in spec.params)
    return Clause(rc.name, rc.args, rc.span, params)


def _what(p: Param) -> str:
    return f"{p.name.upper()}{'...' if p.variadic else ''} ({p.doc})" if p.doc else p.name.upper()


def _positionals(spec: ClauseSpec, rc: RawClause, values: dict[str, Any]) -> None:
    given = [a for a in rc.args if a.key is None]
    slots = spec.positional
    collected: list[Any] = []  # a variadic's values; a tuple grown one by one would be quadratic
    for i, arg in enumerate(given):
        if i >= len(slots) and not (slots and slots[-1].variadic):
            if not slots:
                msg = f"'{spec.name}' takes no positional values"
            else:
                msg = (f"too many positional values: '{spec.name}' takes {len(slots)} "
                       f"({spec.usage()})")
            raise RecipeError(msg, arg.span)
        p = slots[min(i, len(slots) - 1)]
        value = _convert(spec, p, arg)
        if p.variadic:
            collected.append(value)
        else:
            values[p.name] = value
    if collected:
        values[slots[-1].name] = tuple(collected)


def _keywords(spec: ClauseSpec, rc: RawClause, values: dict[str, Any]) -> None:
    seen: set[str] = set()
    for arg in rc.args:
        if arg.key is None:
            continue
        p = next((k for k in spec.keywords if k.name == arg.key), None)
        key_span = Span(arg.span.start, arg.span.start + len(arg.key))
        if p is None:
            positional = next((k for k in spec.positional if k.name == arg.key), None)
            if positional is not None:
                fix = f"{spec.name} {_spelled(arg.value)}"
                raise RecipeError(f"'{arg.key}' of '{spec.name}' is positional: write '{fix}'",
                                  arg.span, suggestion=fix)
            names = [k.name for k in spec.keywords]
            takes = (f"'{spec.name}' takes {', '.join(n + '=' for n in names)}" if names
                     else f"'{spec.name}' takes no key=value arguments")
            raise RecipeError(f"unknown key '{arg.key}': {takes}", key_span,
                              suggestion=suggest(arg.key, names))
        if arg.key in seen:
            raise RecipeError(f"duplicate key '{arg.key}' in '{spec.name}'", arg.span)
        seen.add(arg.key)
        values[p.name] = _convert(spec, p, arg)


def _convert(spec: ClauseSpec, p: Param, arg: Arg) -> Any:
    """Check one written value against its Param: type, choices, range."""
    where = f"'{spec.name}' {p.name}"
    if p.type == "phrase":
        return phrase_value(where, arg)
    if isinstance(arg.value, Call):
        raise RecipeError(f"wrong type: {where} takes no group such as {arg.value.spell()}; groups "
                          "are phrases of 'force'", arg.span)
    if p.type in ("int", "float"):
        return _number_value(where, p, arg)
    if p.type == "str":
        return _string_value(where, arg)
    return _choice_value(where, p, arg)


# Whole numbers count tokens, rows or n-gram sizes and reach torch as int64; nothing a llama
# model holds comes near 2**31. A bound here is a caret at `check`, not an overflow at run time.
INT_LIMIT = 2**31 - 1


def _number_value(where: str, p: Param, arg: Arg) -> int | float:
    value, span = arg.value, arg.span
    whole = p.type == "int"
    if isinstance(value, (str, bool)):
        if isinstance(value, Symbol) and value.lower() in NONFINITE:
            raise nonfinite_error(str(value), span)
        raise RecipeError(f"wrong type: {where} must be {'a whole' if whole else 'a'} number, "
                          f"found {_spelled(value)}", span)
    if whole and isinstance(value, float):
        if value.is_integer():  # `topk 1e26` is out of range, not "did you mean 1000...0"
            _check_range(where, p, value, span)
        hint = str(int(value)) if value.is_integer() else None
        raise RecipeError(f"wrong type: {where} must be a whole number, found {_spelled(value)}",
                          span, hint)
    _check_range(where, p, value, span)
    return value if whole else float(value) + 0.0


def _check_range(where: str, p: Param, value: float, span: Span) -> None:
    """The catalogue's range, then (for whole numbers it leaves unbounded) +-INT_LIMIT."""
    limited = p
    if p.type == "int":
        limited = replace(p, lo=-INT_LIMIT - 1 if p.lo is None else p.lo,
                          hi=INT_LIMIT if p.hi is None else p.hi)
    for rng in (p, limited):
        if not rng.in_range(value):
            below = p.lo is not None and (value < p.lo or (p.lo_open and value == p.lo))
            why = p.lo_why if below else p.hi_why
            why = f": {why}" if why and rng is p else ""
            raise RecipeError(f"out of range: {where} must satisfy {rng.describe_range()}, "
                              f"found {_spelled(value)}{why}", span)


def _string_value(where: str, arg: Arg) -> str:
    value, span = arg.value, arg.span
    if isinstance(value, Symbol):
        raise RecipeError(f"wrong type: {where} must be a \"string\", found the name {value}",
                          span, suggestion=spell_value(str(value)))
    if not isinstance(value, str):
        found = _spelled(value)
        raise RecipeError(f"wrong type: {where} must be a \"string\", found {found}", span,
                          suggestion=spell_value(found))
    if not value:
        raise RecipeError(f"empty string: {where} must not be empty; write some text between "
                          "the quotes", span)
    return value


def _choice_value(where: str, p: Param, arg: Arg) -> Any:
    value = arg.value
    choices = (False, True) if p.type == "bool" else p.choices
    value = {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
    if isinstance(value, (int, float)) and not isinstance(value, bool) or value not in choices:
        spelled = [p.spell(c) for c in choices]
        raise RecipeError(f"wrong value: {where} must be one of {', '.join(spelled)}; "
                          f"found {_spelled(arg.value)}", arg.span,
                          suggestion=suggest(str(arg.value), spelled))
    return str(value) if isinstance(value, str) else value


def _spelled(value: Any) -> str:
    return str(value) if isinstance(value, Symbol) else spell_value(value)


# -- the whole recipe -------------------------------------------------------------------

def _check_recipe(clauses: tuple[Clause, ...]) -> None:
    searches = [c for c in clauses if c.kind == "search"]
    if len(searches) > 1:
        a, b = searches[:2]
        raise RecipeError(f"two search clauses, '{a.canonical}' and '{b.canonical}': "
                          "a recipe has exactly one", b.span)
    seen: dict[str, Clause] = {}
    for c in clauses:
        if c.name in seen and not c.spec.repeatable:
            raise RecipeError(f"duplicate '{c.name}': it may appear only once "
                              f"(already written as '{seen[c.name].canonical}')", c.span)
        seen.setdefault(c.name, c)
    for c in clauses:  # rules a clause states itself (its catalogue entry's)
        problem = clause_problem(c, clauses)
        if problem is not None:
            raise RecipeError(problem.message, _span_of(c, problem.key), suggestion=problem.suggestion)


def _span_of(c: Clause, key: str | None) -> Span:
    """The span of argument `key` of `c` as written (by key or by place); else the clause's."""
    if key is None:
        return c.span
    by_place = dict(zip((p.name for p in c.spec.positional), (a for a in c.args if a.key is None)))
    written = next((a for a in c.args if a.key == key), by_place.get(key))
    return c.span if written is None else written.span


def _warnings(clauses: tuple[Clause, ...]) -> list[RecipeWarning]:
    """What the clauses' entries call allowed but likely a mistake (their `warn`)."""
    found = [(c, c.spec.warn(c, clauses)) for c in clauses if c.spec.warn is not None]
    return [RecipeWarning(message, c.span) for c, message in found if message]
