"""Stage files: a Python file of `@decode.stage` / `@decode.search` declarations, run once.

    >>> decode.load_stages("recipes/plugins/edt.py")
    ['edt']

`decode run --stage FILE` is this. This module imports no torch: loading a file costs
what the file imports.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path

from decode.compiler.plugin_errors import PluginError, exit_message, line_in
from decode.compiler.plugins import declared


def load_stages(*paths: str | Path) -> list[str]:
    """Run each Python file in `paths`; returns the names of the clauses they declared.

        >>> decode.load_stages("recipes/plugins/edt.py")
        ['edt']

    Raises PluginError (with the file, the line and the cause) if a file cannot be run.
    """
    names: list[str] = []
    for path in map(Path, paths):
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
        with declared() as found:
            _run(spec.loader, module, path)
        names += found
    return names


def _run(loader, module, path: Path) -> None:
    """Run the file's code; what it raises becomes one PluginError naming the file and line."""
    try:
        loader.exec_module(module)
    except PluginError as err:
        raise PluginError(f"{path}: {err}") from None
    except SystemExit as err:
        line = line_in(err, path)
        raise PluginError(exit_message(err, f"{path}:{line}" if line else str(path))) from None
    except Exception as err:  # the user's code: say where, without our frames
        raise PluginError(f"cannot load stage file {path}: {_where(err, path)}") from err


def _where(err: Exception, path: Path) -> str:
    """'line N: Type: message' for what a stage file raised."""
    if isinstance(err, SyntaxError):
        return f"line {err.lineno}: {err.msg}"
    line = line_in(err, path)
    return f"{'line ' + str(line) + ': ' if line else ''}{type(err).__name__}: {err}"
