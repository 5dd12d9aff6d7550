"""User-defined search strategies: one decorator turns a `Search` subclass into a clause.

    # topbeam.py
    import decode

    @decode.search("mysearch", args=[decode.Arg("n", int, 1, lo=1)], doc="what it does",
                   cite="Author et al. 2024")
    class MySearch(decode.Search):
        rows = property(lambda self: self.cfg.params["n"])
        def step(self, scores, at, state):
            ...
            return decode.Choice(tokens, parents, scores)

    $ decode run --stage topbeam.py "mysearch 4 | max 32" --prompt "ROMEO:"

The same mechanism as user stages (compiler/plugins.py): `decode.Arg` declares the
arguments, the catalogue gets a search clause whose `impl` is the class (checked, see
below), `--stage FILE` (or `decode.load_stages`) runs the file, and reloading a file
re-declares its clauses.
The built-in searches implement the same interface (compiler/search/base.py); a beam
variant subclasses `decode.Beam` and overrides `rescore` (recipes/plugins/wordreward.py).

Precisely, `impl` is a checked subclass of the class (`checked`): what a method raises
(or a sys.exit), a step result of the wrong kind, shape or dtype, and token ids outside
the vocabulary become one PluginError naming the search and its file and line.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch

from decode.compiler import plugins
from decode.compiler.plugin_errors import dtype_name
from decode.compiler.plugins import Arg, PluginError, defined_at, guarded, source_file
from decode.compiler.search.base import Choice, Search
from decode.compiler.search.beam import Beam  # noqa: F401  (decode.Beam: what a beam variant derives from)
from decode.compiler.search.pool import BeamPool
from decode.dsl.catalogue import CATALOGUE, register
from decode.dsl.spec import ClauseSpec


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
    if cls.step is Search.step and cls.advance is Search.advance:
        raise PluginError(f"search {name!r}: {cls.__name__} must define step (see decode.Search), "
                          "or derive from decode.Beam")
    if issubclass(cls, BeamPool) and cls.step is not Search.step:
        raise PluginError(f"search {name!r}: a decode.Beam variant changes `rescore`, not `step` (the beam "
                          "pool chooses); derive from decode.Search to write a step")


BAD = "decode_out_of_range"  # state key: [step, row, id, what (0 token, 1 parent), bound] of the first bad id


def checked(cls: type, name: str) -> type:
    """`cls` with every call of the user's code checked, as a subclass (so the user's own
    `self.` calls and isinstance still work). A step's tokens (or parents) outside 0..V-1
    (0..R-1) are replaced by padding (the row itself) inside the step, so the model never
    reads them, and recorded in the state without a host sync: `done` then ends the search
    and `finalize` raises the PluginError."""
    label = f"plugin search {name!r}"
    at = f"{label} ({defined_at(cls.step if cls.step is not Search.step else cls)})"

    class Checked(cls):
        def init(self, device, seq_len):
            state = guarded(super().init, label, device, seq_len)
            _must_be_dict(state, f"{label} ({defined_at(cls.init)})", "init")
            return {**state, BAD: torch.full((5,), -1, dtype=torch.long, device=device)}

        def step(self, scores, where, state):
            own = {k: v for k, v in state.items() if k != BAD}
            out = guarded(super().step, label, scores, where, own)
            choice = _step_result(out, scores, at)
            tokens, parents, bad = _in_range(where.t, choice.tokens, choice.parents, scores.shape[-1],
                                             state[BAD], self.cfg.pad)
            new = own if choice.state is None else choice.state
            return Choice(tokens, parents, choice.scores, {**new, BAD: bad})

        def rescore(self, acc, logp, hp):
            out = guarded(super().rescore, label, acc, logp, hp)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)
                    and out[0].shape == acc.shape and out[0].dtype == acc.dtype):
                raise PluginError(f"{label} ({defined_at(cls.rescore)}): rescore returned {plugins.kind_of(out)}; "
                                  f"it must return (scores {list(acc.shape)} {dtype_name(acc)}, penalty or None)")
            return out

        def done(self, state):
            over = guarded(super().done, label, state)
            own = state.get("own", {})
            return over if BAD not in own else over | (own[BAD][0] >= 0)

        def finalize(self, state, seq, lim):
            own = state.get("own", {})
            if BAD in own:
                step, row, value, what, bound = own[BAD].tolist()
                if step >= 0:
                    kind = "token id" if what == 0 else "parent row"
                    limit = "the model's vocabulary" if what == 0 else "the rows"
                    raise PluginError(f"{at} returned {kind} {value} for row {row} at step {step}, "
                                      f"outside {limit} (0..{bound - 1}); a search's step must return "
                                      f"{kind}s in 0..{bound - 1}")
            return guarded(super().finalize, label, state, seq, lim)

    if issubclass(cls, BeamPool):  # a beam variant: its own code is `rescore`
        del Checked.init, Checked.step
    else:
        del Checked.rescore
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(Checked, attr, getattr(cls, attr))
    own = next((f for f in vars(cls).values() if callable(f) and source_file(f)), cls.step)
    Checked.decode_plugin = (label, source_file(own))  # the file of the user's own code
    return Checked


def _must_be_dict(state, plugin: str, method: str) -> None:
    if not isinstance(state, dict):
        raise PluginError(f"{plugin}: {method} returned {plugins.kind_of(state)}; the search state must be "
                          "a dict of tensors")


def _step_result(out, scores: torch.Tensor, plugin: str) -> Choice:
    """The Choice a step returned, checked; tokens and parents as int64 (any integer dtype
    holds ids exactly)."""
    rows = scores.shape[0]
    want = (f"; step must return decode.Choice(tokens [{rows}] int64, parents [{rows}] int64 or None, "
            f"scores [{rows}] float, state dict or None)")
    if not isinstance(out, tuple) or len(out) not in (3, 4):
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else plugins.kind_of(out)
        raise PluginError(f"{plugin}: step returned {got}{want}")
    out = Choice(*out)
    for what, x in (("tokens", out.tokens), ("parents", out.parents), ("scores", out.scores)):
        if x is None and what == "parents":
            continue
        if not isinstance(x, torch.Tensor):
            raise PluginError(f"{plugin}: step returned {what} as {plugins.kind_of(x)}{want}")
        number = x.is_floating_point() if what == "scores" else not (x.dtype == torch.bool or x.is_floating_point()
                                                                       or x.is_complex())
        if tuple(x.shape) != (rows,) or not number:
            raise PluginError(f"{plugin}: step returned {what} of shape {list(x.shape)} and dtype "
                              f"{dtype_name(x)}{want}")
    if out.state is not None:
        _must_be_dict(out.state, plugin, "step")
    return Choice(out.tokens.long(), None if out.parents is None else out.parents.long(),
                  out.scores.float(), out.state)


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
