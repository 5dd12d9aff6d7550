"""Where plugin code went wrong, said as one PluginError naming the plugin, its file and line.

    >>> guarded(lambda: 1 / 0, "plugin stage 'edt'")
    PluginError: plugin stage 'edt' (edt.py:12) raised ZeroDivisionError: division by zero; fix the plugin

User stages (compiler/plugins.py), user searches (compiler/search/plugin.py) and stage
files (compiler/plugin_files.py) all report through these helpers. This module imports
no torch.
"""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Callable, Iterable


class PluginError(Exception):
    """A stage file could not be loaded, or a stage declaration is wrong."""


def kind_of(x) -> str:
    """What `x` is, for a message: `kind_of(None)` is 'None', `kind_of([])` is 'a list'."""
    return "None" if x is None else f"a {type(x).__name__}"


def source_file(fn: Callable) -> str | None:
    """The file a function's code comes from, as its frames name it (None if unknown).

        >>> source_file(edt)
        '/home/me/recipes/plugins/edt.py'
    """
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code.co_filename if code is not None else None


def defined_at(fn: Callable) -> str:
    """'file.py:line' of a function's definition, for messages (its name if it has no code).

        >>> defined_at(edt)
        'recipes/plugins/edt.py:16'
    """
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", type(fn).__name__)
    return f"{shown(code.co_filename)}:{code.co_firstlineno}"


def shown(file: str) -> str:
    """`file` as the user would write it: relative to the working directory when inside it.

        >>> shown(os.path.abspath("edt.py"))
        'edt.py'
    """
    try:
        rel = os.path.relpath(file)
    except ValueError:  # another drive (Windows)
        return file
    return file if rel.startswith("..") else rel


def line_in(err: BaseException, file: str | Path | None) -> int | None:
    """The last line of `file` in `err`'s traceback: the line that raised, or that called
    what raised; None if no frame is in `file`.

        >>> line_in(err, "bad.py")
        3
    """
    if file is None:
        return None
    home = Path(file).resolve()
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == home]
    return lines[-1] if lines else None


def guarded(fn: Callable, label: str, *args, **kwargs):
    """`fn(*args, **kwargs)` where fn is plugin code: an exception it raises becomes one
    PluginError naming the plugin (`label`, "plugin stage 'edt'") and its line that raised;
    sys.exit() one too, since a plugin must not end the process (a batch would end silently).

        >>> guarded(user_fn, "plugin stage 'edt'", logits, ctx)
    """
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
    """The message for plugin code at `where` ('file.py:line') calling sys.exit.

        >>> exit_message(SystemExit(2), "mine.py:4")
        'plugin mine.py:4 called sys.exit(2); a plugin must raise an exception instead'
    """
    code = "" if err.code is None else repr(err.code)
    return f"plugin {where} called sys.exit({code}); a plugin must raise an exception instead"


def _raised_at(err: BaseException, fn: Callable) -> str:
    """'file.py:line' of fn's line that raised `err`; fn's definition if none did."""
    home = source_file(fn)
    line = line_in(err, home)
    return f"{shown(home)}:{line}" if line else defined_at(fn)


def checked_step(compiled: Callable, eager: Callable[[], Callable], parts: Iterable) -> Callable:
    """The compiled step, checked for the plugins among `parts` (the search, the stages).

    Its first call runs `eager()` (the same step, not compiled): plugin code then runs once
    as plain Python, so what it raises or returns wrong reaches the user as the PluginError
    its check raised, where torch.compile's tracing would wrap it in a dynamo exception.
    Shapes and dtypes do not change between calls, so one checked call covers them all.
    Code that runs eagerly but cannot be compiled (a host sync) is named too.

        >>> step = checked_step(torch.compile(fn), lambda: fn, [search, *kernels])
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


def dtype_name(x) -> str:
    """A tensor's dtype as the user writes it: 'float32'."""
    return str(x.dtype).removeprefix("torch.")


def scores_problem(out, logits) -> str | None:
    """What is wrong with `out` as the scores of a stage given `logits`, or None."""
    import torch  # the caller holds tensors, so torch is loaded; this module stays torch-free

    if not isinstance(out, torch.Tensor):
        return kind_of(out)
    if out.shape != logits.shape:
        return f"a tensor of shape {list(out.shape)}"
    if out.dtype != logits.dtype:
        return f"a tensor of dtype {dtype_name(out)}"
    if out.device != logits.device:
        return f"a tensor on {out.device} (the input is on {logits.device})"
    return None
