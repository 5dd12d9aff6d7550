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
arguments, the catalogue gets a search clause whose `impl` is the class (checked, see
below), `--stage FILE` (or `decode.load_stages`) runs the file, and reloading a file
re-declares its clauses.
The built-in searches (greedy, beam, diverse, sbeam, siblings, iterative) implement the
same interface, compiler/search/base.py; recipes/plugins/mirostat.py is a whole example.

Precisely, `impl` is a checked subclass of the class (`checked`): what a method raises
(or a sys.exit), a step result of the wrong kind, shape or dtype, and token ids outside
the vocabulary become one PluginError naming the search and its file and line.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch

from decode.compiler import plugins
from decode.compiler.plugins import Arg, PluginError, defined_at, guarded, source_file
from decode.compiler.search.base import Search
from decode.dsl.catalogue import CATALOGUE, register
from decode.dsl.spec import ClauseSpec

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
                              sampling=sampling, cite=cite, impl=checked(cls, name), explain=explain)
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


BAD = "decode_out_of_range"  # state key: [step, row, id, what (0 token, 1 parent), bound] of the first bad id


def checked(cls: type, name: str) -> type:
    """`cls` with every call checked, as a subclass (so the user's own `self.` calls and
    isinstance still work). A step's tokens (or parents) outside 0..V-1 (0..R-1) are
    replaced by padding (row itself) inside the step, so the model never reads them, and
    recorded in the state without a host sync: `done` then ends the search and `finalize`
    raises the PluginError."""
    label = f"plugin search {name!r}"
    at = f"{label} ({defined_at(cls.step)})"  # what a step returns is checked: name the step

    class Checked(cls):
        def init(self, device, seq_len):
            state = guarded(super().init, label, device, seq_len)
            _must_be_dict(state, f"{label} ({defined_at(cls.init)})", "init")
            return {**state, BAD: torch.full((5,), -1, dtype=torch.long, device=device)}

        def step(self, t, scores, process, noise, seq, lim, hp, state):
            out = guarded(super().step, label, t, scores, process, noise, seq, lim, hp, state)
            tokens, parents, new, info = _step_result(out, scores, at)
            vocab = scores.shape[-1]
            tokens, parents, bad = _in_range(t, tokens, parents, vocab, state.get(BAD), self.cfg.pad)
            return tokens, parents, {**new, BAD: bad}, info

        def done(self, state):
            over = guarded(super().done, label, state)
            return over if state.get(BAD) is None else over | (state[BAD][0] >= 0)

        def stop_rows(self, state, rows):
            new = guarded(super().stop_rows, label, state, rows)
            _must_be_dict(new, f"{label} ({defined_at(cls.stop_rows)})", "stop_rows")
            return {**new, BAD: state[BAD]} if BAD in state else new

        def finalize(self, state, seq, lim):
            if BAD in state:
                step, row, value, what, bound = state[BAD].tolist()
                if step >= 0:
                    kind = "token id" if what == 0 else "parent row"
                    limit = "the model's vocabulary" if what == 0 else "the rows"
                    raise PluginError(f"{at} returned {kind} {value} for row {row} at step {step}, "
                                      f"outside {limit} (0..{bound - 1}); a search's step must return "
                                      f"{kind}s in 0..{bound - 1}")
            return guarded(super().finalize, label, state, seq, lim)

    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(Checked, attr, getattr(cls, attr))
    Checked.decode_plugin = (label, source_file(cls.step))  # for checked_step
    return Checked


def _must_be_dict(state, plugin: str, method: str) -> None:
    if not isinstance(state, dict):
        raise PluginError(f"{plugin}: {method} returned {plugins.kind_of(state)}; the search state must be "
                          "a dict of tensors")


def _step_result(out, scores: torch.Tensor, plugin: str):
    """(tokens, parents, state, info) from what a step returned, checked; tokens and
    parents as int64 (any integer dtype holds ids exactly)."""
    rows = scores.shape[0]
    want = (f"; step must return (tokens [{rows}] int64, parents [{rows}] int64 or None, "
            "state dict, info dict)")
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else plugins.kind_of(out)
        raise PluginError(f"{plugin}: step returned {got}{want}")
    tokens, parents, state, info = out
    for what, x in (("tokens", tokens), ("parents", parents)):
        if x is None and what == "parents":
            continue
        if not isinstance(x, torch.Tensor):
            raise PluginError(f"{plugin}: step returned {what} as {plugins.kind_of(x)}{want}")
        if tuple(x.shape) != (rows,) or x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
            raise PluginError(f"{plugin}: step returned {what} of shape {list(x.shape)} and dtype "
                              f"{str(x.dtype).removeprefix('torch.')}{want}")
    _must_be_dict(state, plugin, "step")
    if not isinstance(info, dict):
        raise PluginError(f"{plugin}: step returned info as {plugins.kind_of(info)}{want}")
    return tokens.long(), None if parents is None else parents.long(), state, info


def _in_range(t, tokens, parents, vocab: int, bad, pad: int):
    """Tokens outside 0..vocab-1 -> pad, parents outside 0..R-1 -> the row itself, and the
    first such id (step, row, id, what, bound) kept in `bad` (-1s: none yet)."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    wrong = (tokens < 0) | (tokens >= vocab)
    found = [(wrong, tokens, 0, vocab)]
    if parents is not None:
        wrong_parent = (parents < 0) | (parents >= tokens.shape[0])
        found.append((wrong_parent, parents, 1, tokens.shape[0]))
        parents = torch.where(wrong_parent, rows, parents)
    tokens = torch.where(wrong, pad, tokens)
    if bad is None:
        return tokens, parents, None
    for mask, ids, what, bound in found:
        row = torch.argmax(mask.int())
        value = ids.gather(0, row.view(1)).squeeze(0)  # a gather: indexing by a tensor would sync
        record = torch.stack([t.long(), row, value, torch.tensor(what, device=ids.device),
                              torch.tensor(bound, device=ids.device)])
        bad = torch.where(mask.any() & (bad[0] < 0), record, bad)
    return tokens, parents, bad
