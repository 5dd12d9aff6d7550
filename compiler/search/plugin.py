"""User-defined search strategies: one decorator turns a `Search` subclass into a clause.

    # topbeam.py
    import decode

    @decode.search("mysearch", args=[decode.Arg("k", int, lo=1)], doc="what it does",
                   cite="Author et al. 2024")
    class MySearch(decode.Search):
        def init(self, device, seq_len): ...
        def step(self, t, scores, process, noise, seq, lim, hp, state): ...
        def done(self, state): ...
        def finalize(self, state, seq, lim): ...

    $ decode run --stage topbeam.py "mysearch 4 | max 32" --prompt "ROMEO:"

The same mechanism as user stages (compiler/plugins.py): `decode.Arg` declares the
arguments, the catalogue gets a search clause whose `impl` is the class, `--stage FILE`
(or `decode.load_stages`) runs the file, and reloading a file re-declares its clauses.
The built-in searches (greedy, beam, diverse, sbeam, siblings, iterative) implement the
same interface, compiler/search/base.py; recipes/plugins/mirostat.py is a whole example.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

from decode.compiler import plugins
from decode.compiler.plugins import Arg, PluginError
from decode.compiler.search.base import Search
from decode.dsl.stages import CATALOGUE, ClauseSpec, register

REQUIRED_METHODS = ("init", "step", "done", "finalize")


def search(name: str, args: Iterable[Arg] = (), doc: str | None = None, cite: str | None = None,
           sampling: bool | Callable = False, explain: Callable | None = None):
    """Declare a search clause: `@decode.search("name", args=[decode.Arg(...)], doc=...)` on a
    `decode.Search` subclass, which is returned unchanged.

    The class gets the clause's arguments in `cfg.params` (Python values); numbers it
    lists in `hyper()` reach `step` as 0-d tensors in `hp`, so a sweep reuses the compiled
    step. `sampling=True` makes the clause a sampling one (the engine then passes uniform
    noise to `step`); `explain(params) -> str` says what it does for `decode explain`.
    """
    args = tuple(args)

    def declare(cls: type) -> type:
        own = inspect.cleandoc(cls.__dict__.get("__doc__") or "") if isinstance(cls, type) else ""
        text = (doc or own.split("\n")[0]).strip().rstrip(".")
        _check_declaration(name, args, text, cls)
        try:
            spec = ClauseSpec(name, "search", text,
                              positional=tuple(a for a in args if not a.keyword),
                              keywords=tuple(a for a in args if a.keyword),
                              sampling=sampling, cite=cite, impl=cls, explain=explain)
        except ValueError as err:
            raise PluginError(f"search {name!r}: {err}") from None
        old = CATALOGUE.get(name)
        mine = old is not None and isinstance(old.impl, type)
        again = mine and _origin(old.impl) == _origin(cls)
        if old is not None and not again:
            where = f"by {_origin(old.impl)}" if mine else "as a built-in clause"
            raise PluginError(f"search {name!r}: the name is already taken ({where}); pick another name")
        register(spec, replace=again)
        if plugins._loading is not None:  # load_stages collects the names a file declares
            plugins._loading.append(name)
        return cls

    return declare


def _origin(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_declaration(name: str, args: tuple, doc: str, cls: type) -> None:
    plugins.check_clause("search", name, args, doc, "mybeam")
    if not (isinstance(cls, type) and issubclass(cls, Search)):
        raise PluginError(f"search {name!r}: decorate a class derived from decode.Search, not {cls!r}")
    missing = [m for m in REQUIRED_METHODS if getattr(cls, m) is getattr(Search, m)]
    if missing:
        raise PluginError(f"search {name!r}: {cls.__name__} must define {', '.join(missing)} "
                          "(see decode.Search)")
