"""The recipe IR: frozen dataclasses carrying source spans.

Equality means "the same decoding": spans, source text, layout and warnings are left
out, and two recipes are equal iff their canonical clause structures are.

    >>> r = parse("topp 0.9 | beam 4")
    >>> r.search.name, r.search["k"], [c.name for c in r.stages]
    ('beam', 4, ['topp'])
    >>> r == parse("beam 4 lenpen=1 | topp 0.9")
    True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator

from decode.dsl import structured
from decode.dsl.errors import RecipeWarning, line_col
from decode.dsl.catalogue import DEFAULT_SEARCH, lookup, sampling_clause_names, setting_spec
from decode.dsl.spec import ClauseSpec

LANG_VERSION = "1"

_MISSING: Any = object()


@dataclass(frozen=True)
class Span:
    """Character offsets [start, end) into the recipe text."""

    start: int
    end: int

    def line_col(self, text: str) -> tuple[int, int]:
        """1-based (line, column) where the span starts."""
        return line_col(text, self.start)

    def slice(self, text: str) -> str:
        return text[self.start:self.end]

    def cover(self, other: "Span") -> "Span":
        return Span(min(self.start, other.start), max(self.end, other.end))


NOWHERE = Span(0, 0)


class Choices(tuple):
    """The values a swept number takes, as written: `{0.8, 0.9}` or `0.6..1.0 step 0.2`
    (expanded). A recipe holding one is a sweep (dsl/sweep.py), not one recipe.

        >>> Choices((0.8, 0.9), "{0.8, 0.9}")
        (0.8, 0.9)
    """

    def __new__(cls, values, written: str = ""):
        self = super().__new__(cls, values)
        self.written = written
        return self


@dataclass(frozen=True)
class Arg:
    """One written argument: `key` is None for a positional value."""

    key: str | None
    value: Any
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Clause:
    """A checked clause. `params` holds every declared parameter, defaults filled in,
    in catalogue order; read one with `clause["p"]` or `clause.get("p")`.

        >>> parse("beam 4").search["lenpen"]
        1.0
    """

    name: str
    args: tuple[Arg, ...] = field(compare=False)
    span: Span = field(compare=False)
    params: tuple[tuple[str, Any], ...]

    def __getitem__(self, key: str) -> Any:
        for name, value in self.params:
            if name == key:
                return value
        raise KeyError(f"clause {self.name!r} has no parameter {key!r}")

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def spec(self) -> ClauseSpec:
        spec = lookup(self.name)
        if spec is None:
            raise KeyError(f"clause {self.name!r} is not in the catalogue")
        return spec

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def impl(self) -> str | None:
        return self.spec.impl

    @property
    def sampling(self) -> bool:
        return self.spec.is_sampling(self.param_dict)

    @property
    def canonical(self) -> str:
        """This clause in canonical spelling, defaults left out: 'beam 4 lenpen=0.6'."""
        return self.spelled({})

    def spelled(self, given: dict[str, str]) -> str:
        """The canonical spelling, with the parameters in `given` written as the text given
        (never left out as defaults): a sweep writes its sets so."""
        spec = self.spec
        values = self.param_dict
        parts = [self.name]
        trailing: list[str] = []  # positional defaults are left out only at the end
        for p in spec.positional:
            word = given.get(p.name) or p.spell(values[p.name])
            if _is_default(p, values) and p.name not in given:
                trailing.append(word)
            else:
                parts += trailing + [word]
                trailing = []
        for p in spec.keywords:
            if not _is_default(p, values) or p.name in given:
                parts.append(f"{p.name}={given.get(p.name) or p.spell(values[p.name])}")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.canonical


def _is_default(p: Any, values: dict[str, Any]) -> bool:
    default = values[p.default_from] if p.default_from else p.default
    value = values[p.name]
    return type(value) is type(default) and value == default


_DEFAULT_SEARCH = Clause(DEFAULT_SEARCH, (), NOWHERE, ())
_TAIL_KINDS = ("limit", "stop", "control")


@dataclass(frozen=True, eq=False)
class Recipe:
    """A checked recipe: its clauses in written order, the text, and warnings.

        >>> r = parse("beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7")
        >>> r.sampling, r.max_new_tokens, r.canonical
        (True, 128, 'beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 | temp 0.7')
    """

    clauses: tuple[Clause, ...]
    text: str = ""
    warnings: tuple[RecipeWarning, ...] = ()
    base: str = ""  # the folder its files' relative paths start from ("": the working directory)

    # -- reading clauses -------------------------------------------------------
    def __iter__(self) -> Iterator[Clause]:
        return iter(self.clauses)

    def _of_kind(self, *kinds: str) -> tuple[Clause, ...]:
        return tuple(c for c in self.clauses if c.kind in kinds)

    @property
    def search(self) -> Clause:
        """The search clause; a synthesized `greedy` when none was written."""
        found = self._of_kind("search")
        return found[0] if found else _DEFAULT_SEARCH

    @property
    def modifiers(self) -> tuple[Clause, ...]:
        return self._of_kind("modifier")

    @property
    def stages(self) -> tuple[Clause, ...]:
        """Logit stages in written (= application) order."""
        return self._of_kind("logit")

    def get(self, name: str) -> Clause | None:
        """The first clause called `name` (the synthesized greedy included), or None."""
        if name == self.search.name:
            return self.search
        return next((c for c in self.clauses if c.name == name), None)

    def param(self, name: str, key: str, default: Any = None) -> Any:
        """`recipe.param("beam", "k", 1)`: a clause's parameter, or `default` if absent."""
        clause = self.get(name)
        return default if clause is None else clause.get(key, default)

    # -- meaning -----------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        """True iff selection samples: some clause samples and no `temp 0` asks for argmax."""
        return any(c.sampling for c in self.clauses) and self._cold is None

    @property
    def random(self) -> bool:
        """True iff a run draws at random: selection samples, or a clause draws itself (npad)."""
        return self.sampling or any(c.spec.draws for c in self.clauses)

    @property
    def _cold(self) -> Clause | None:
        """The clause that makes selection argmax whatever else samples (`temp 0`), if any."""
        return next((c for c in self.stages if c.spec.is_argmax(c.param_dict)), None)

    @property
    def sampling_reason(self) -> str:
        """Why selection samples or is argmax, in one sentence."""
        samplers = [c for c in self.clauses if c.sampling]
        names = ", ".join(c.canonical for c in samplers)
        if self._cold is not None:
            unused = f" ({names} cannot change the choice)" if samplers else ""
            return f"argmax, because {self._cold.spec.argmax_doc} means argmax{unused}"
        if samplers:
            return f"sampling, because {names} {'samples' if len(samplers) == 1 else 'sample'}"
        return ("argmax, because no clause samples (the sampling clauses are "
                f"{sampling_clause_names()})")

    def setting(self, name: str) -> Any:
        """The value of engine setting `name`: the one parameter of the clause whose entry
        has that `setting`, or without that clause its default (a list: (); none: None).

            >>> parse("beam 4 | max 32").setting("max_new_tokens")
            32
        """
        spec = setting_spec(name)
        p = spec.params[0]
        unset = () if p.variadic else None if p.required else p.default
        return self.param(spec.name, p.name, unset)

    @property
    def max_new_tokens(self) -> int:
        return self.setting("max_new_tokens")

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self.setting("stop_strings")

    @property
    def seed(self) -> int | None:
        return self.setting("seed")

    # -- canonical form ----------------------------------------------------------
    @property
    def canonical_clauses(self) -> tuple[Clause, ...]:
        """Search, modifiers, logit stages (written order), then `loop_clauses`."""
        return (self.search,) + self.modifiers + self.stages + self.loop_clauses

    @property
    def loop_clauses(self) -> tuple[Clause, ...]:
        """max, stop, seed: what the engine loop itself carries out, in canonical order; a
        setting written at its default (`max 128`) says nothing and is left out."""
        return tuple(c for kind in _TAIL_KINDS for c in self._of_kind(kind)
                     if not (c.spec.setting and c.canonical == c.name))

    @cached_property  # fingerprint and fmt both need it, and a `ban` may hold 100k strings
    def canonical(self) -> str:
        """The `decode fmt` form: 'beam 4 | topp 0.9 | max 32'."""
        return " | ".join(c.canonical for c in self.canonical_clauses)

    @property
    def fingerprint(self) -> str:
        """12 hex digits naming exactly this decoding (language version + canonical form + the
        contents of the files its clauses read: editing a schema changes it)."""
        data = f"decode-recipe v{LANG_VERSION}\n{self.canonical}" + "".join(
            f"\nfile sha256:{d}" for d in self.file_digests)
        return hashlib.sha256(data.encode()).hexdigest()[:12]

    @cached_property  # `parse` reads them as it checks: later edits are another recipe's
    def file_digests(self) -> tuple[str, ...]:
        """sha256 of each file a clause reads (a constraint's schema or grammar), in order."""
        found = (c.spec.constraint(c.param_dict) for c in self.clauses if c.spec.constraint is not None)
        return tuple(structured.digest(src, self.base) for src in found if src.file)

    def _key(self) -> tuple:
        return tuple((c.name, c.params) for c in self.canonical_clauses)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipe):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.canonical
