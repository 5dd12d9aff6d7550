"""What a clause of the recipe language is: its parameters (`Param`), the clause itself
(`ClauseSpec`) and the canonical spelling of values. dsl/catalogue.py lists the clauses.

    >>> Param("p", "float", lo=0.0, hi=1.0, lo_open=True).describe_range()
    '0 < p <= 1'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union


class _Required:
    """Sentinel default of a parameter the recipe must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

TYPES = ("int", "float", "str", "bool", "enum", "phrase")  # phrase: a "string" or a Call (force)
KINDS = ("search", "modifier", "logit", "stop", "limit", "control")

# Limits that keep float32 scores finite (the largest float32 is 3.4e38; past it a score is
# inf, and inf - inf is NaN). What a logit stage is given stays below 1e9 in magnitude: raw
# logits are far smaller and iterative's filler is -1e9. A factor (temp, repetition) or
# a shift (bias, penalties) of at most SCALE leaves that below 1e29, with nine orders of
# magnitude to spare for the stages after it; a divisor below 1/SCALE, or a value past
# SCALE, can overflow on its own.
SCALE = 1e20
OVERFLOW = "a score can overflow float32, whose largest number is 3.4e38, to inf or NaN"
BIG_WHY = "beyond 1e20 in magnitude " + OVERFLOW
DIVISOR_WHY = "below 1e-20 or above 1e20 " + OVERFLOW
# length ** lenpen for lengths up to 2**20 tokens stays within 2**(+-80) when |lenpen| <= 4,
# so a sum of log-probs scaled by it stays finite (and non-zero) in float32
LENPEN = 4.0


@dataclass(frozen=True)
class Param:
    """One argument of a clause: its type, default and allowed range.

    `default_from` names another parameter whose value is the default (beam's `return`
    defaults to its `k`); `variadic` collects one or more positional values (strings, or
    token ids: `suppress 5 17`).

        >>> Param("p", "float", lo=0.0, hi=1.0, lo_open=True).describe_range()
        '0 < p <= 1'
    """

    name: str
    type: str
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    variadic: bool = False
    default_from: str | None = None
    doc: str = ""
    or_zero: bool = False   # 0 is allowed besides the range (temp: 0 means argmax)
    tokens: bool = False    # a string matched as the token ids it encodes to (ban, bias), not as text
    lo_why: str = ""        # why the range stops at lo (for the docs and range errors)
    hi_why: str = ""        # why it stops at hi

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"Param {self.name}: type must be one of {TYPES}, not {self.type!r}")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"Param {self.name}: an enum needs choices")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and self.default_from is None

    def in_range(self, value: float) -> bool:
        if self.or_zero and value == 0:
            return True
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True

    def describe_range(self) -> str:
        """The allowed range in words, e.g. '0 < p <= 1', '' when unbounded."""
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)

        lo = "" if self.lo is None else f"{num(self.lo)} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {num(self.hi)}"
        if not (lo or hi):
            return ""
        return f"{self.name} = 0 or " * self.or_zero + f"{lo}{self.name}{hi}"

    def describe_default(self) -> str:
        if self.default_from:
            return self.default_from.upper()
        if self.default is REQUIRED:
            return "required"
        if self.default is None:  # optional, and nothing when left out (cfg's negative prompt)
            return "unset"
        return self.spell(self.default)

    def spell(self, value: Any) -> str:
        """Canonical spelling of a value of this parameter (enum names are bare)."""
        if self.variadic and value == ():
            return "none"  # an optional list left empty (always last, so canonical drops it)
        if self.type == "enum" and isinstance(value, str):
            return value
        return spell_value(value)


Params = Mapping[str, Any]
Sampling = Union[bool, Callable[[Params], bool]]


@dataclass(frozen=True)
class Problem:
    """What a clause's `check` found wrong with a recipe: the message, the argument to point
    at (its key; None: the whole clause) and the fix to suggest.

        >>> Problem("groups=3 does not divide the beam width 4", key="groups").key
        'groups'
    """

    message: str
    key: str | None = None
    suggestion: str | None = None


ROLES = ("mask", "shift", "factor", "scale", "truncation", "mix", "other")


def _sets_nothing(params: Params, ids: Callable, kw: Mapping[str, Any]) -> dict:
    return {}


@dataclass(frozen=True, eq=False)
class HF:
    """How a clause maps onto transformers' `generate()` (dsl/reference.py reads it).

    `kwargs(params, ids, kw)` gives the arguments the clause sets, from its resolved params,
    `ids(text)` (the token ids of a text) and `kw` (the arguments so far: a repeatable
    clause adds to its own); `neutral` holds those arguments switched off. `note(params)` is
    a caveat worth knowing; `refuse(params, sampling)` why transformers cannot run the
    clause (None: it can). A search sets `beams` when transformers runs it as beam search,
    and `one_draw(params)` when it draws one sequence per prompt (from a one-token
    distribution, argmax).

    A logit stage has `rank`, its place in transformers' fixed processor order, and `role`,
    what it does to a logit vector, which says what it commutes with: `mask` sets some to
    -inf, `shift` adds to some, `factor` scales each by a positive factor chosen by its
    sign, `scale` divides all by one positive number, `truncation` keeps some tokens (by
    rank alone if `by_rank`; never dropping the most likely one if `keeps_argmax`; at least
    the parameter `keep` many, transformers' min_tokens_to_keep); `mix` combines them with
    another row's (cfg), and `other` is anything else (forcing a token, renormalising, a
    penalty that depends on the logit's own value): both commute with nothing. transformers
    applies `scale` and `truncation` (its warpers) only when sampling. `beams_refuse` says why
    transformers' beam search does something else with the clause (None: it does the same).

        >>> HF(lambda p, ids, kw: {"top_p": p["p"]}, {"top_p": 1.0}).kwargs({"p": 0.9}, str, {})
        {'top_p': 0.9}
    """

    kwargs: Callable[[Params, Callable, Mapping[str, Any]], dict] = _sets_nothing
    neutral: Mapping[str, Any] = field(default_factory=dict)
    note: Callable[[Params], str] | None = None
    refuse: Callable[[Params, bool], "str | None"] | None = None
    beams: bool = False
    one_draw: Callable[[Params], bool] | None = None
    rank: int | None = None
    role: str = ""
    by_rank: bool = False
    keeps_argmax: bool = False
    keep: str | None = None
    beams_refuse: str | None = None

    def __post_init__(self) -> None:
        if self.role and self.role not in ROLES:
            raise ValueError(f"HF role must be one of {ROLES}, not {self.role!r}")


@dataclass(frozen=True)
class ClauseSpec:
    """A clause of the language: its arguments and what it means.

    `sampling` is a bool or a predicate on the resolved params (temp samples iff t > 0);
    `argmax(params)` says the clause makes selection argmax whatever else samples (temp 0),
    `argmax_doc` how a recipe writes that. `impl` is the dotted path of the compiler's
    implementation, or the implementation itself (a user stage's kernel: an object with
    `apply`, `STATIC` and optionally `prepare`, like a stage module); None: handled by the
    engine loop itself, e.g. `max`, whose value is then a `setting` the engine reads
    (`Recipe.setting("max_new_tokens")`; written at its default, it says nothing).
    `beam_variant` marks a modifier that turns `beam K` into another beam search.
    `details` is a paragraph for the language reference (exact semantics); `aliases` are
    names other libraries use for the clause (for "did you mean"); `hf` its transformers
    equivalent (None: there is none).
    `explain(params) -> str` says in plain words, with the clause's own numbers, what it
    does (`decode explain`); `lower(params, recipe) -> params` gives a stage's kernel
    parameters that depend on the rest of the recipe (`suppress_at_start` shifts past a
    token `force_bos` forces; default: the clause's own); `check(clause, clauses) -> str | Problem | None` is a
    recipe-level rule (e.g. "needs a beam search"): it returns what is wrong, or None when
    all is well; `warn(clause, clauses) -> str | None` says what is allowed but likely a
    mistake. `constraint(params) -> dsl.structured.Source` marks a constraint (structured
    output): where the text its engine compiles is.

        >>> ClauseSpec("temp", "logit", "divide by T", sampling=lambda p: p["t"] > 0).is_sampling({"t": 0.0})
        False
    """

    name: str
    kind: str
    doc: str
    positional: tuple[Param, ...] = ()
    keywords: tuple[Param, ...] = ()
    sampling: Sampling = False
    repeatable: bool = False
    reference: str | None = None
    cite: str | None = None
    impl: Any = None
    beam_variant: bool = False
    setting: str | None = None
    sampling_doc: str = field(default="", compare=False)
    argmax: Callable[[Params], bool] | None = field(default=None, compare=False)
    argmax_doc: str = field(default="", compare=False)
    details: str = field(default="", compare=False)
    aliases: tuple[str, ...] = field(default=(), compare=False)
    hf: HF | None = field(default=None, compare=False)
    explain: Callable[[Params], str] | None = field(default=None, compare=False)
    lower: Callable[[Params, Any], dict] | None = field(default=None, compare=False)
    check: Callable[[Any, tuple], "str | Problem | None"] | None = field(default=None, compare=False)
    warn: Callable[[Any, tuple], "str | None"] | None = field(default=None, compare=False)
    constraint: Callable[[Params], Any] | None = field(default=None, compare=False)
    draws: bool = False  # draws at random though selection need not sample (npad's noise): the run is seeded

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"clause {self.name}: kind must be one of {KINDS}, not {self.kind!r}")
        variadic = [p for p in self.positional if p.variadic]
        if variadic and self.positional[-1] is not variadic[-1] or len(variadic) > 1:
            raise ValueError(f"clause {self.name}: only the last positional may be variadic")
        if self.kind == "logit" and self.hf is not None and (self.hf.rank is None or not self.hf.role):
            raise ValueError(f"clause {self.name}: a logit stage's hf needs its rank and role")

    @property
    def params(self) -> tuple[Param, ...]:
        return self.positional + self.keywords

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def is_sampling(self, params: Params) -> bool:
        return self.sampling(params) if callable(self.sampling) else bool(self.sampling)

    def is_argmax(self, params: Params) -> bool:
        return self.argmax is not None and self.argmax(params)

    def usage(self) -> str:
        """The clause as one would write it, e.g. 'beam K [lenpen=1.0] ...'."""
        parts = [self.name]
        for p in self.positional:
            word = p.name.upper() + ("..." if p.variadic else "")
            parts.append(word if p.required else f"[{word}]")
        for p in self.keywords:
            unset = p.default is None and p.default_from is None
            parts.append(f"{p.name}={p.name.upper()}" if p.required
                         else f"[{p.name}={p.name.upper() if unset else p.describe_default()}]")
        return " ".join(parts)


@dataclass(frozen=True)
class Call:
    """A written `name(value, ...)`: `any("big", "large")`, `ids(5, 7)` (the phrases of
    `force`, dsl/phrases.py); `spans` are where each value was written.

        >>> Call("any", ("big", Call("ids", (5, 7)))).spell()
        'any("big", ids(5, 7))'
    """

    name: str
    args: tuple
    spans: tuple = field(default=(), compare=False)

    def spell(self) -> str:
        return f"{self.name}({', '.join(spell_value(a) for a in self.args)})"


def spell_value(value: Any) -> str:
    """Canonical spelling of one value (shared with `fmt`)."""
    if isinstance(value, Call):
        return value.spell()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value + 0.0)  # +0.0 turns -0.0 into 0.0
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, tuple):
        return " ".join(spell_value(v) for v in value)
    if value is None:
        return "none"
    raise TypeError(f"cannot spell {value!r}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_TO_ESCAPE = re.compile('["\\\\\x00-\x1f\x7f\ud800-\udfff]')


def quote(text: str) -> str:
    """Double-quote `text` with the language's escapes: quote('a"b') == '"a\\\\"b"'."""
    # re.sub, not a loop over characters: `fmt` of a 200k-string `ban` quotes every one
    return '"' + _TO_ESCAPE.sub(_escape, text) + '"'


def _escape(m: re.Match) -> str:
    return _ESCAPES.get(m.group()) or f"\\u{ord(m.group()):04x}"

