"""Surviving a damaged torch compile cache.

A compile killed midway (a full disk, the OOM killer, Ctrl-C at the wrong moment) can leave
a truncated or empty kernel (`.so`, or the generated `.py`) in inductor's on-disk cache.
Inductor trusts what it finds there, so every later compile of that recipe would fail with
the same traceback, forever. `first_call` runs a compiled step's first call (the one that
compiles); if it fails on a file inside the cache, the damaged files are removed and the
step is compiled again; if that fails too, the run goes on uncompiled with a warning that
names the cache directory.

    >>> step = first_call(torch.compile(fn), fn, lambda: torch.compile(fn))
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import warnings
from typing import Callable, Iterator

_watchers: list[Callable[[bool, str], None]] = []  # see watch_compiles


@contextlib.contextmanager
def watch_compiles(watch: Callable[[bool, str], None]) -> Iterator[None]:
    """While inside, `watch(True, what)` runs as a compiled function's first call (the compile)
    starts and `watch(False, what)` as it ends, `what` naming what compiles ("the model's
    forward (...)", "this recipe's selection step (...)"), so a face can say so.

        >>> with watch_compiles(lambda starting, what: print(("compiling " if starting else "done: ") + what)):
        ...     decode.generate(model, "greedy", ["ROMEO:"])
    """
    _watchers.append(watch)
    try:
        yield
    finally:
        _watchers.remove(watch)


class CompileCacheWarning(UserWarning):
    """The compile cache was damaged: decode repaired it, or ran without compiling."""


def cache_dir() -> str:
    """Inductor's cache directory (without creating it, unlike torch's own helper)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.path.abspath(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())


def _messages(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield str(err)
        err = err.__cause__ or err.__context__


def _truncated(path: str) -> bool:
    """True for an empty kernel, or a shared object cut short.

    An ELF file ends with its section header table, so a file shorter than the table's end
    was cut; loading one can kill the process with SIGBUS, which no handler can catch.
    """
    size = os.path.getsize(path)
    if size == 0 or not path.endswith(".so"):
        return size == 0
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
        return len(head) < 64 or head[:4] != b"\x7fELF"
    order = "<" if head[5] == 1 else ">"
    (shoff,) = struct.unpack_from(order + "Q", head, 0x28)
    shentsize, shnum = struct.unpack_from(order + "HH", head, 0x3A)
    return shoff + shentsize * shnum > size


def scan(root: str) -> list[str]:
    """Kernel files under `root` that cannot be valid: empty, or a truncated `.so`."""
    bad = []
    for base, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(base, f)
            if f.endswith((".so", ".py")):
                try:
                    if _truncated(path):
                        bad.append(path)
                except OSError:
                    continue
    return bad


def damaged_files(err: BaseException, root: str) -> list[str]:
    """Files under `root` that `err` (or its causes) names, plus every invalid kernel there."""
    root = root.rstrip(os.sep) + os.sep
    named = {m for msg in _messages(err)
             for m in re.findall(re.escape(root) + r"[^\s:'\"]+", msg)}
    return sorted(named | set(scan(root)))  # a named file may be gone already (scrubbed)


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


_SCRUBBED: set[str] = set()


def scrub(root: str) -> None:
    """Once per process and cache directory, remove kernels that cannot be valid, before
    inductor loads one (a truncated `.so` crashes the process instead of raising)."""
    if root in _SCRUBBED or not os.path.isdir(root):
        return
    _SCRUBBED.add(root)
    bad = scan(root)
    if bad:
        _remove(bad)
        warnings.warn(
            f"torch's compile cache ({root}) held {len(bad)} damaged kernel file(s), e.g. "
            f"{os.path.basename(bad[0])} (a compile was killed midway?); removed them, they "
            f"will be compiled again", CompileCacheWarning)


def _is_compile_failure(err: BaseException) -> bool:
    from torch._dynamo.exc import BackendCompilerFailed

    return isinstance(err, BackendCompilerFailed) or isinstance(err, (ImportError, OSError))


def first_call(compiled: Callable, eager: Callable, recompile: Callable[[], Callable],
               what: str = "the step") -> Callable:
    """Wrap a compiled step so that a damaged cache costs one recompile, not every run.

    Returns a function that behaves as `compiled`; its first call repairs the cache and
    retries (with `recompile()`) if compiling failed on a damaged cache file, and falls back
    to `eager` for the life of the wrapper if the retry fails on the cache again. Errors that
    do not involve the cache propagate unchanged. Watchers see the first call as `what`.
    """
    state = {"fn": compiled, "checked": False}

    def call(*args):
        if state["checked"]:
            return state["fn"](*args)
        for watch in _watchers:
            watch(True, what)
        try:
            return first(args)
        finally:
            for watch in _watchers:
                watch(False, what)

    def first(args):
        root = cache_dir()
        scrub(root)
        for attempt in range(2):
            try:
                out = state["fn"](*args)
            except Exception as err:  # noqa: BLE001 - filtered just below
                broken = damaged_files(err, root) if _is_compile_failure(err) else []
                if not broken:
                    raise
                _remove(broken)
                if attempt == 0:
                    warnings.warn(
                        f"torch's compile cache ({root}): loading {os.path.basename(broken[0])} "
                        f"failed; removed {len(broken)} damaged file(s) and compiling again",
                        CompileCacheWarning)
                    state["fn"] = recompile()
                    continue
                warnings.warn(
                    f"torch's compile cache ({root}) is still damaged after a repair; this run "
                    f"goes on uncompiled (slower). Remove {root} to rebuild it.",
                    CompileCacheWarning)
                state["fn"] = eager
                out = eager(*args)
            state["checked"] = True
            return out

    return call
