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

The decorator registers a catalogue entry (`dsl.stages.register`) whose `impl` is a
`Kernel` around the function, so the parser, `fmt`, `explain`, the docs and the compiler
know the clause exactly as they know a built-in one. The function sees what a built-in
kernel sees (see `compiler/stages/__init__.py`): logits [R, V] (log-probabilities under a
beam search, raw logits otherwise), the `StepContext` (token history of every row), and
its arguments; numbers arrive as 0-d tensors unless listed `static`. It runs inside the
compiled step, so it must be tensor code without host syncs (no `.item()`, no `if` on
tensor values); removed tokens become -inf.

This module imports no torch: `decode check --stage f.py` costs what f.py imports.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from decode.dsl.stages import CATALOGUE, ClauseSpec, Param, register

_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = {"true", "false", "none"}


class PluginError(Exception):
    """A stage file could not be loaded, or a stage declaration is wrong."""


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
    """A user stage as the compiler sees a stage module: `apply`, `STATIC`, `prepare`."""

    apply: Callable
    STATIC: frozenset = frozenset()
    prepare: Callable | None = None  # prepare(params, tokenizer) -> params, on the host, once

    @property
    def origin(self) -> str:
        """Who declares the stage, 'module:name': the same in a reloaded file or a re-run
        notebook cell, different for another file."""
        name = getattr(self.apply, "__qualname__", type(self.apply).__name__)
        return f"{getattr(self.apply, '__module__', '?')}:{name}"

    @property
    def where(self) -> str:
        """Where the function is defined, for messages: 'file.py:name'."""
        code = getattr(self.apply, "__code__", None)
        name = getattr(self.apply, "__qualname__", type(self.apply).__name__)
        return f"{code.co_filename if code else '?'}:{name}"


def stage(name: str, args: Iterable[Arg] = (), doc: str | None = None, cite: str | None = None,
          sampling: bool | Callable = False, prepare: Callable | None = None):
    """Declare a logit stage: `@decode.stage("name", args=[decode.Arg(...)], doc=...)`.

    The decorated function `fn(logits, ctx, **args) -> logits` is returned unchanged.
    `doc` (default: the first line of the function's docstring) goes into `--help`, the
    language reference and `decode explain`; `cite` names the method's source; `sampling`
    (a bool, or a predicate on the argument values) says whether the clause makes the
    recipe sample, as `topp` does. `prepare(params, tokenizer) -> params` runs once on the
    host before decoding (e.g. to turn strings into token ids).

    Loading the same file again (or re-running a notebook cell) re-declares its stages;
    any other clash of names is an error.
    """
    args = tuple(args)

    def declare(fn: Callable) -> Callable:
        text = (doc or (inspect.getdoc(fn) or "").split("\n")[0]).strip().rstrip(".")
        _check_declaration(name, args, text, fn, prepared=prepare is not None)
        kernel = Kernel(fn, frozenset(a.name for a in args if a.static), prepare)
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


def _check_declaration(name: str, args: tuple, doc: str, fn: Callable, prepared: bool) -> None:
    check_clause("stage", name, args, doc, "softcap")
    names = [a.name for a in args]
    if not callable(fn):
        raise PluginError(f"stage {name!r}: decorate a function (logits, ctx, **args) -> logits")
    sig = inspect.signature(fn)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    # with `prepare`, the function takes what prepare returns, which may have other names
    missing = [n for n in names if n not in sig.parameters and not takes_all and not prepared]
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if missing or len(positional) < 2:
        want = ", ".join(["logits", "ctx", *names])
        raise PluginError(f"stage {name!r}: {fn.__name__} must take ({want}), "
                          f"it takes {sig}")


_loading: list[str] | None = None


def load_stages(*paths: str | Path) -> list[str]:
    """Run each Python file in `paths`; returns the names of the clauses they declared.

        >>> decode.load_stages("recipes/plugins/edt.py")
        ['edt']

    Raises PluginError (with the file, the line and the cause) if a file cannot be run.
    """
    global _loading
    names: list[str] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise PluginError(f"cannot load stage file {path}: no such file")
        # one module name per file, so that reloading a file replaces its own stages only
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        module_name = "decode_stage_" + re.sub(r"\W", "_", path.stem) + "_" + digest
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot load stage file {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # so the file's dataclasses and pickling work
        _loading = []
        try:
            spec.loader.exec_module(module)
        except PluginError as err:
            raise PluginError(f"{path}: {err}") from None
        except Exception as err:  # the user's code: say where, without our frames
            raise PluginError(f"cannot load stage file {path}: {_where(err, path)}") from err
        finally:
            names += _loading
            _loading = None
    return names


def _where(err: Exception, path: Path) -> str:
    if isinstance(err, SyntaxError):
        return f"line {err.lineno}: {err.msg}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == path]
    line = f"line {frames[-1].lineno}: " if frames else ""
    return f"{line}{type(err).__name__}: {err}"
