"""`fmt`: the canonical one-line form of a recipe; `fmt_file`: the same for a file, comments kept.

    >>> fmt("topp .90 temp 0.7  # nucleus\\nbeam 4 lenpen=1")
    'beam 4 | topp 0.9 | temp 0.7'
"""
from __future__ import annotations

import bisect
import re

from decode.dsl.check import parse
from decode.dsl.ir import Recipe
from decode.dsl.parser import string_pattern


def fmt(recipe: "Recipe | str", base: str = "") -> str:
    """Canonical form: search first (explicit `greedy`), modifiers, logit stages in written
    order, then `max`, `stop`, `seed`; defaults left out; canonical number spelling. A sweep
    keeps its sets (a range written out as the set of its values). `base`: `parse`'s."""
    from decode.dsl.sweep import is_sweep, sweep

    if isinstance(recipe, str) and is_sweep(recipe):
        return sweep(recipe, None, base).canonical
    return parse(recipe, base).canonical


def fmt_file(text: str, base: str = "") -> str:
    """The canonical form of a recipe file, keeping every comment (what `fmt --write` writes).

    The comment block before the first clause stays on top. A comment on a line with code
    stays with the clause written there; a comment on a line of its own goes above the next
    clause (at the end when none follows). Comments beyond the top block put one clause on a
    line, in canonical order, each with its comments; otherwise the clauses share one line.

        >>> print(fmt_file("# nucleus\\ntopp .9  # p\\nbeam 4\\n# end\\n"), end="")
        # nucleus
        beam 4
        topp 0.9  # p
        # end
    """
    from decode.dsl.sweep import is_sweep, sweep

    sw = sweep(text, None, base) if is_sweep(text) else None  # a sweep keeps its sets
    recipe = sw.points[0] if sw is not None else parse(text, base)
    first = min(c.span.start for c in recipe.clauses)
    above, after, tail = _attach(text, recipe, first)
    header = _header(text[:text.rfind("\n", 0, first) + 1])
    if not (any(above.values()) or any(after.values()) or tail):
        return header + (sw.canonical if sw is not None else recipe.canonical) + "\n"
    lines = []
    for c in (sw.shown_clauses() if sw is not None else recipe.canonical_clauses):
        mine = after.get(id(c), [])
        lines += above.get(id(c), [])
        lines.append((sw.spell(c) if sw is not None else c.canonical) + (f"  {mine[0]}" if mine else ""))
        lines += mine[1:]  # a second comment on the same clause: on its own line, below it
    return header + "\n".join(lines + tail) + "\n"


def _attach(text: str, recipe: Recipe, first: int
            ) -> tuple[dict[int, list[str]], dict[int, list[str]], list[str]]:
    """Each comment after the top block, as (above clause, after clause, at the end), keyed by id."""
    clauses = recipe.clauses
    starts = [c.span.start for c in clauses]  # written order: increasing
    above: dict[int, list[str]] = {id(c): [] for c in clauses}
    after: dict[int, list[str]] = {id(c): [] for c in clauses}
    tail: list[str] = []
    # a string may hold '#', so strings are matched (and skipped) too
    for m in re.compile(f"{string_pattern()}|#[^\n]*").finditer(text, first):
        if not m.group().startswith("#"):
            continue
        pos, comment = m.start(), m.group().rstrip()
        i = bisect.bisect_left(starts, pos)  # clauses[:i] start before the comment
        inside = clauses[i - 1].span.end > pos  # between a clause's own lines
        on_code_line = text[text.rfind("\n", 0, pos) + 1:pos].strip() != ""
        if inside or on_code_line:
            after[id(clauses[i - 1])].append(comment)
        elif i < len(clauses):
            above[id(clauses[i])].append(comment)
        else:
            tail.append(comment)
    _move_dropped(recipe, above, after, tail)
    return above, after, tail


def _move_dropped(recipe: Recipe, above: dict[int, list[str]], after: dict[int, list[str]],
                  tail: list[str]) -> None:
    """Comments of a clause the canonical form leaves out (`max 128`, the default) go above the
    next clause written, or to the end: a comment is never lost."""
    canonical = {id(c) for c in recipe.canonical_clauses}
    carried: list[str] = []
    for c in recipe.clauses:
        mine = above[id(c)] + after[id(c)]
        if id(c) in canonical:
            above[id(c)][:0] = carried
            carried = []
        else:
            above[id(c)], after[id(c)] = [], []
            carried += mine
    tail[:0] = carried


def _header(block: str) -> str:
    """The lines before the first clause (a recipe file's citation), trailing blank lines dropped."""
    lines = block.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(line + "\n" for line in lines)
