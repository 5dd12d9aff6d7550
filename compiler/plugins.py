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

A plugin that raises, calls sys.exit, returns anything but scores of its input's shape
and dtype, or cannot be compiled is one PluginError naming it and its file and line: a
compiled run makes its first step eagerly to check plugin code (`checked_step`).

This module imports no torch: `decode check --stage f.py` costs what f.py imports.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from decode.dsl.catalogue import CATALOGUE, register
from decode.dsl.spec import ClauseSpec, Param

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
    """A user stage as the compiler sees a stage module: `apply`, `STATIC`, `prepare`.

    Every call is checked: what the user's function raises, or a result that is not
    scores shaped like its input, becomes one PluginError naming the stage and its line.
    """

    name: str
    fn: Callable
    STATIC: frozenset = frozenset()
    setup: Callable | None = None  # the user's prepare(params, tokenizer) -> params

    def apply(self, logits, ctx, **params):
        """The user's function on `logits`, its result checked (shape and dtype are static,
        so under torch.compile the check costs nothing at run time)."""
        out = guarded(self.fn, self.label, logits, ctx, **params)
        problem = _scores_problem(out, logits)
        if problem:
            raise PluginError(f"{self.label} ({defined_at(self.fn)}) returned {problem}; a stage must "
                              f"return scores of the input's shape {list(logits.shape)} and dtype "
                              f"{_dtype(logits)}")
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
        """Where the function is defined, for messages: 'file.py:name'."""
        code = getattr(self.fn, "__code__", None)
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"{code.co_filename if code else '?'}:{name}"


def _dtype(x) -> str:
    return str(x.dtype).removeprefix("torch.")


def kind_of(x) -> str:
    return "None" if x is None else f"a {type(x).__name__}"


def _scores_problem(out, logits) -> str | None:
    """What is wrong with `out` as the scores of a stage given `logits`, or None."""
    import torch  # the caller holds tensors, so torch is loaded; this module stays torch-free

    if not isinstance(out, torch.Tensor):
        return kind_of(out)
    if out.shape != logits.shape:
        return f"a tensor of shape {list(out.shape)}"
    if out.dtype != logits.dtype:
        return f"a tensor of dtype {_dtype(out)}"
    if out.device != logits.device:
        return f"a tensor on {out.device} (the input is on {logits.device})"
    return None


def source_file(fn: Callable) -> str | None:
    """The file a function's code comes from, as its frames name it (None if unknown)."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code.co_filename if code is not None else None


def defined_at(fn: Callable) -> str:
    """'file.py:line' of a function's definition, for messages."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    return f"{shown(code.co_filename)}:{code.co_firstlineno}"


def shown(file: str) -> str:
    """`file` as the user would write it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(file)
    except ValueError:  # another drive (Windows)
        return file
    return file if rel.startswith("..") else rel


def guarded(fn: Callable, label: str, *args, **kwargs):
    """`fn(*args, **kwargs)` where fn is plugin code: an exception it raises becomes one
    PluginError naming the plugin (`label`, "plugin stage 'edt'") and its line that raised;
    sys.exit() one too, since a plugin must not end the process (a batch would end silently)."""
    try:
        return fn(*args, **kwargs)
    except PluginError:
        raise
    except SystemExit as err:
        raise PluginError(exit_message(err, _raised_at(err, fn))) from None
    except Exception as err:  # the user's code: say where, without our frames
        raise PluginError(f"{label} ({_raised_at(err, fn)}) raised {type(err).__name__}: {err}; "
                          "fix the plugin") from err


def exit_message(err: SystemExit, where: str) -> str:
    """The message for plugin code at `where` ('file.py:line') calling sys.exit."""
    code = "" if err.code is None else repr(err.code)
    return f"plugin {where} called sys.exit({code}); a plugin must raise an exception instead"


def _raised_at(err: BaseException, fn: Callable) -> str:
    """'file.py:line' of the last frame of the traceback in fn's file (the plugin's line
    that raised, or that called what raised); fn's definition if none is."""
    home = source_file(fn)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == home]
    return f"{shown(home)}:{frames[-1].lineno}" if frames else defined_at(fn)


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
        kernel = Kernel(name, fn, frozenset(a.name for a in args if a.static), prepare)
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


def checked_step(compiled: Callable, eager: Callable[[], Callable], parts: Iterable) -> Callable:
    """The compiled step, checked for the plugins among `parts` (the search, the stages).

    Its first call runs `eager()` (the same step, not compiled): plugin code then runs once
    as plain Python, so what it raises or returns wrong reaches the user as the PluginError
    its check raised, where torch.compile's tracing would wrap it in a dynamo exception.
    Shapes and dtypes do not change between calls, so one checked call covers them all.
    Code that runs eagerly but cannot be compiled (a host sync) is named too.
    """
    found = [p.decode_plugin for p in parts if getattr(p, "decode_plugin", None)]
    if not found:
        return compiled
    calls = iter([eager()])

    def step(*args):
        try:
            return next(calls, compiled)(*args)
        except Exception as err:
            named = _uncompilable(err, found)
            if named is None:
                raise
            raise named from err

    return step


def _uncompilable(err: Exception, found: list[tuple[str, str]]) -> PluginError | None:
    """A PluginError naming the plugin line that torch.compile stopped at, if it did."""
    for frame in reversed(list(getattr(err, "real_stack", None) or [])):  # dynamo's view of the user's stack
        for label, file in found:
            if frame.filename == file:
                why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                return PluginError(f"{label} ({shown(file)}:{frame.lineno}) cannot run in the compiled step "
                                   f"({why}); a plugin must be tensor code without host syncs (no "
                                   ".item(), no `if` on a tensor's value), or decode without compiling "
                                   "(--no-compile, compile=False)")
    return None


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
        except SystemExit as err:
            line = _line(err, path)
            raise PluginError(exit_message(err, f"{path}:{line}" if line else str(path))) from None
        except Exception as err:  # the user's code: say where, without our frames
            raise PluginError(f"cannot load stage file {path}: {_where(err, path)}") from err
        finally:
            names += _loading
            _loading = None
    return names


def _where(err: Exception, path: Path) -> str:
    if isinstance(err, SyntaxError):
        return f"line {err.lineno}: {err.msg}"
    line = _line(err, path)
    return f"{'line ' + str(line) + ': ' if line else ''}{type(err).__name__}: {err}"


def _line(err: BaseException, path: Path) -> int | None:
    """The line of `path` that raised `err` (or called what raised it)."""
    home = path.resolve()
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == home]
    return frames[-1].lineno if frames else None
