"""User-defined logit stages: one decorator turns a tensor function into a clause.

    # softcap.py
    import torch
    import decode

    @decode.stage("softcap", args=[decode.Arg("cap", float, lo=0.0, lo_open=True)],
                  doc="squash the logits into (-CAP, CAP) with CAP * tanh(logits / CAP)",
                  cite="Gemma Team 2024, Gemma 2")
    def softcap(logits, ctx, cap):
        return cap * torch.tanh(logits / cap)

    $ decode run --stage softcap.py "sample 4 | softcap 30 | topp 0.9" --prompt "ROMEO:"

The decorator registers a catalogue entry (`dsl.catalogue.register`) whose `impl` is a
`Kernel` around the function, so the parser, `fmt`, `explain`, the docs and the compiler
know the clause exactly as they know a built-in one. The function sees what a built-in
kernel sees (see `compiler/stages/__init__.py`): logits [R, V] (log-probabilities under a
beam search, raw logits otherwise), the `StepContext` (token history of every row), and
its arguments; numbers arrive as 0-d tensors unless listed `static`. It runs inside the
compiled step, so it must be tensor code without host syncs (no `.item()`, no `if` on
tensor values); removed tokens become -inf.

A plugin that raises, calls sys.exit, returns anything but scores of its input's shape
and dtype, or cannot be compiled is one PluginError naming it and its file and line: a
compiled run makes its first step eagerly to check plugin code (`checked_step`).

Where plugin code went wrong is said by compiler/plugin_errors.py; stage files are run by
compiler/plugin_files.py (`load_stages`).

This module imports no torch: `decode check --stage f.py` costs what f.py imports.
"""
from __future__ import annotations

import inspect
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from decode.compiler.plugin_errors import PluginError, defined_at, dtype_name, guarded, kind_of, scores_problem, source_file
from decode.compiler.plugin_errors import checked_step  # noqa: F401  (compiler/engine.py imports it from here)
from decode.dsl.catalogue import CATALOGUE, register
from decode.dsl.spec import ClauseSpec, Param

_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = {"true", "false", "none"}


@dataclass(frozen=True)
class Arg(Param):
    """One argument of a user stage, e.g. `Arg("strength", float, 1.0, lo=0.0)`: a catalogue
    `Param` whose type may be spelled int, float, str or bool (`choices` make an enum).

    Arguments are written positionally in declaration order unless `keyword=True` (written
    `key=value`). `static=True` passes the value as a Python value, part of the compiled
    graph's structure (a change recompiles); other numbers arrive as 0-d tensors, so a sweep
    over them reuses the compiled step.
    """

    type: Any = float
    keyword: bool = False
    static: bool = False

    def __post_init__(self) -> None:
        kind = _TYPES.get(self.type, self.type)
        if self.choices and kind != "bool":
            kind = "enum"
        if kind not in ("int", "float", "str", "bool", "enum"):
            raise PluginError(f"Arg {self.name!r} has type {self.type!r}; use int, float, str or bool")
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "choices", tuple(self.choices))
        try:
            super().__post_init__()
        except ValueError as err:
            raise PluginError(str(err)) from None


@dataclass(frozen=True, eq=False)
class Kernel:
    """A user stage as the compiler sees a stage module: `apply`, `STATIC`, `prepare`.

    Every call is checked: what the user's function raises, or a result that is not
    scores shaped like its input, becomes one PluginError naming the stage and its line.
    """

    name: str
    fn: Callable
    STATIC: frozenset = frozenset()
    setup: Callable | None = None  # the user's prepare(params, tokenizer) -> params
    start: Callable | None = None  # the user's init(ctx, vocab, **params) -> state
    take: Callable | None = None   # the user's accept(state, tokens, scores, **params) -> state

    def apply(self, logits, ctx, *state, **params):
        """The user's function on `logits` (and its state, if it keeps one), its result
        checked (shape and dtype are static: under torch.compile the check costs nothing)."""
        out = guarded(self.fn, self.label, logits, ctx, *state, **params)
        problem = scores_problem(out, logits)
        if problem:
            raise PluginError(f"{self.label} ({defined_at(self.fn)}) returned {problem}; a stage must "
                              f"return scores of the input's shape {list(logits.shape)} and dtype "
                              f"{dtype_name(logits)}")
        return out

    def prepare(self, params: dict, tokenizer) -> dict:
        """The user's prepare (once, on the host), or `params` unchanged without one."""
        if self.setup is None:
            return params
        out = guarded(self.setup, self.label, params, tokenizer)
        if not isinstance(out, dict):
            raise PluginError(f"{self.label} ({defined_at(self.setup)}): prepare returned {kind_of(out)}; "
                              "it must return a dict of the arguments the stage function takes")
        return out

    @property
    def init(self) -> Callable | None:
        """llama.cpp's reset, `init(ctx, vocab, **params) -> state`; None: it keeps no state."""
        return None if self.start is None else lambda *a, **p: self._state("init", self.start, *a, **p)

    @property
    def accept(self) -> Callable | None:
        """`accept(state, tokens, scores, **params) -> state`, once the search chose."""
        return None if self.take is None else lambda *a, **p: self._state("accept", self.take, *a, **p)

    def _state(self, what: str, fn: Callable, *args, **params) -> dict:
        out = guarded(fn, self.label, *args, **params)
        if not isinstance(out, dict):
            raise PluginError(f"{self.label} ({defined_at(fn)}): {what} returned {kind_of(out)}; a stage's "
                              "state must be a dict of tensors, one row each")
        return out

    @property
    def label(self) -> str:
        """The stage for messages: "plugin stage 'edt'"."""
        return f"plugin stage {self.name!r}"

    @property
    def decode_plugin(self) -> tuple[str, str]:
        """(label, file) of the plugin, as user searches have it too (`checked_step`)."""
        return self.label, source_file(self.fn)

    @property
    def origin(self) -> str:
        """Who declares the stage, 'module:name': the same in a reloaded file or a re-run
        notebook cell, different for another file."""
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"{getattr(self.fn, '__module__', '?')}:{name}"

    @property
    def where(self) -> str:
        """Where the function is defined, for messages: 'edt.py:16' (`defined_at`)."""
        return defined_at(self.fn)


def stage(name: str, args: Iterable[Arg] = (), doc: str | None = None, cite: str | None = None,
          sampling: bool | Callable = False, prepare: Callable | None = None,
          init: Callable | None = None, accept: Callable | None = None):
    """Declare a logit stage: `@decode.stage("name", args=[decode.Arg(...)], doc=...)`.

    The decorated function `fn(logits, ctx, **args) -> logits` is returned unchanged.
    `doc` (default: the first line of the function's docstring) goes into `--help`, the
    language reference and `decode explain`; `cite` names the method's source; `sampling`
    (a bool, or a predicate on the argument values) says whether the clause makes the
    recipe sample, as `topp` does. `prepare(params, tokenizer) -> params` runs once on the
    host before decoding (e.g. to turn strings into token ids). With `init(ctx, vocab,
    **args) -> state` and `accept(state, tokens, scores, **args) -> state` the stage keeps
    state (a dict of [R, ...] tensors) and the function takes it: fn(logits, ctx, state, **args).

    Loading the same file again (or re-running a notebook cell) re-declares its stages;
    any other clash of names is an error.
    """
    args = tuple(args)

    def declare(fn: Callable) -> Callable:
        text = (doc or (inspect.getdoc(fn) or "").split("\n")[0]).strip().rstrip(".")
        _check_declaration(name, args, text, fn, prepare is not None, stateful=init is not None)
        if (init is None) != (accept is None):
            raise PluginError(f"stage {name!r}: a stage with state gives both init= and accept=")
        kernel = Kernel(name, fn, frozenset(a.name for a in args if a.static), prepare, init, accept)
        try:
            spec = ClauseSpec(name, "logit", text,
                              positional=tuple(a for a in args if not a.keyword),
                              keywords=tuple(a for a in args if a.keyword),
                              sampling=sampling, cite=cite, impl=kernel)
        except ValueError as err:
            raise PluginError(f"stage {name!r}: {err}") from None
        old = CATALOGUE.get(name)
        mine = old is not None and isinstance(old.impl, Kernel)
        again = mine and old.impl.origin == kernel.origin
        if old is not None and not again:
            where = f"by {old.impl.where}" if mine else "as a built-in clause"
            raise PluginError(f"stage {name!r}: the name is already taken ({where}); pick another name")
        register(spec, replace=again)
        if _loading is not None:
            _loading.append(name)
        return fn

    return declare


def check_clause(what: str, name: str, args: tuple, doc: str, example: str) -> None:
    """The checks every user clause passes (`what`: 'stage', 'search'): its name, its doc,
    its arguments."""
    if not isinstance(name, str) or not _NAME.match(name) or name.lower() in _RESERVED:
        raise PluginError(f"{what} name {name!r}: use letters, digits and _ (not starting with a "
                          f"digit), e.g. {example!r}")
    if not doc:
        raise PluginError(f"{what} {name!r}: give doc='what it does' (or a docstring)")
    for a in args:
        if not isinstance(a, Arg):
            raise PluginError(f"{what} {name!r}: args must be decode.Arg(...), not {a!r}")
    names = [a.name for a in args]
    if len(set(names)) != len(names):
        raise PluginError(f"{what} {name!r}: two arguments share a name: {names}")


def _check_declaration(name: str, args: tuple, doc: str, fn: Callable, prepared: bool, stateful: bool) -> None:
    check_clause("stage", name, args, doc, "softcap")
    names = [a.name for a in args]
    if not callable(fn):
        raise PluginError(f"stage {name!r}: decorate a function (logits, ctx, **args) -> logits")
    sig = inspect.signature(fn)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    # with `prepare`, the function takes what prepare returns, which may have other names
    missing = [n for n in names if n not in sig.parameters and not takes_all and not prepared]
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    third = positional[2].name if len(positional) > 2 else None  # a stage with state takes it third
    if missing or len(positional) < 2 + stateful or (stateful and third in names):
        want = ", ".join(["logits", "ctx", *["state"] * stateful, *names])
        raise PluginError(f"stage {name!r}: {fn.__name__} must take ({want}), "
                          f"it takes {sig}")


_loading: list[str] | None = None  # the names declared while a stage file runs (`declared`)


@contextmanager
def declared() -> Iterator[list[str]]:
    """The names of the clauses that `stage` and `search` declare inside the block.

        >>> with declared() as names:
        ...     exec_the_file()
    """
    global _loading
    _loading = names = []
    try:
        yield names
    finally:
        _loading = None
