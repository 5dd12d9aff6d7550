"""Sweeps: a recipe whose numbers may be sets or ranges stands for the grid of recipes it spans.

    >>> s = sweep("sample 4 | topp {0.8, 0.9, 0.95} | temp 0.6..1.0 step 0.2")
    >>> len(s.points), s.points[0].canonical
    (9, 'sample 4 | topp 0.8 | temp 0.6')
    >>> s.canonical
    'sample 4 | topp {0.8, 0.9, 0.95} | temp {0.6, 0.8, 1.0}'

Each point is an ordinary checked Recipe with its own fingerprint; the points run in the
written order of the grid (the last axis changing fastest). A plain recipe is a sweep of one
point with no axes.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from decode.dsl.check import _check
from decode.dsl.errors import RecipeError, unicode_problem
from decode.dsl.ir import Arg, Choices, Recipe, Span
from decode.dsl.parser import RawClause, parse_raw

MAX_POINTS = 10_000  # more asks the user to confirm (decode run --yes)


@dataclass(frozen=True)
class Axis:
    """One swept number: the clause (its index among the written clauses), the parameter, the values."""

    clause: int
    name: str          # the clause's name
    param: str         # the parameter's name
    values: Choices
    span: Span

    @property
    def label(self) -> str:
        return f"{self.name}.{self.param}"


@dataclass(frozen=True)
class Sweep:
    text: str
    axes: tuple[Axis, ...]
    points: tuple[Recipe, ...]

    @property
    def canonical(self) -> str:
        """The canonical text of the sweep: the first point's, each swept value written as its set."""
        return " | ".join(self.spell(c) for c in self.shown_clauses())

    def sets(self) -> dict[int, dict[str, str]]:
        """id of a clause of the first point -> {swept parameter: its set as written canonically}."""
        first, given = self.points[0], {}
        for a in self.axes:
            c = first.clauses[a.clause]
            given.setdefault(id(c), {})[a.param] = "{" + ", ".join(c.spec.param(a.param).spell(v)
                                                                   for v in a.values) + "}"
        return given

    def spell(self, clause) -> str:
        """A clause of the first point in canonical spelling, with its sets."""
        return clause.spelled(self.sets().get(id(clause), {}))

    def shown_clauses(self) -> list:
        """The first point's canonical clauses, and a swept loop setting even at its default."""
        first, given = self.points[0], self.sets()
        shown = list(first.canonical_clauses)
        shown += [c for c in first.clauses if id(c) in given and all(c is not x for x in shown)]
        return shown

    def at(self, i: int) -> dict[str, object]:
        """{axis label: value} of point i."""
        sizes = [len(a.values) for a in self.axes]
        out = {}
        for a, size in zip(reversed(self.axes), reversed(sizes)):
            i, j = divmod(i, size)
            out[a.label] = a.values[j]
        return dict(reversed(list(out.items())))


def is_sweep(text: str) -> bool:
    """Whether recipe text holds a set or a range (a syntax error counts as not)."""
    try:
        return bool(_axes_raw(parse_raw(text)))
    except RecipeError:
        return False


def sweep(text: str, max_points: int | None = MAX_POINTS, base: str = "") -> Sweep:
    """Parse and check every point of a sweep; a mistake is a RecipeError over the set or clause.

    More than `max_points` points is a RecipeError saying how many (None: no limit); `base`
    is `parse`'s.
    """
    try:
        bad = unicode_problem(text)
        if bad is not None:
            raise RecipeError(bad[1], Span(bad[0], bad[0] + 1))
        raw = parse_raw(text)
        found = _axes_raw(raw)
        n = math.prod(len(arg.value) for _, _, arg in found)
        if max_points is not None and n > max_points:
            first = found[0][2]
            raise RecipeError(f"this sweep has {n:,} points (more than {max_points:,}); check the sets and "
                              "ranges, or confirm with --yes", first.span)
        points = []
        for combo in itertools.product(*[arg.value for _, _, arg in found]):
            points.append(_check(text, _substitute(raw, found, combo), base))
        axes = tuple(Axis(ci, raw[ci].name, _param_name(points[0], ci, raw[ci], ai), arg.value, arg.span)
                     for ci, ai, arg in found)
        return Sweep(text, axes, tuple(points))
    except RecipeError as err:
        err.text = text
        raise


def _axes_raw(raw: list[RawClause]) -> list[tuple[int, int, Arg]]:
    return [(ci, ai, a) for ci, rc in enumerate(raw) for ai, a in enumerate(rc.args)
            if isinstance(a.value, Choices)]


def _substitute(raw, found, combo) -> list[RawClause]:
    out = list(raw)
    for (ci, ai, arg), value in zip(found, combo):
        args = list(out[ci].args)
        args[ai] = Arg(arg.key, value, arg.span)
        out[ci] = replace(out[ci], args=tuple(args))
    return out


def _param_name(point: Recipe, ci: int, rc: RawClause, ai: int) -> str:
    arg = rc.args[ai]
    if arg.key is not None:
        return arg.key
    spec = point.clauses[ci].spec
    i = sum(1 for a in rc.args[:ai] if a.key is None)
    return spec.positional[min(i, len(spec.positional) - 1)].name
