"""The step functions of this process, kept by their model.

A step (compiled or not) is built once per model, recipe structure and shape, then reused.
It captures its model (dynamo then bakes the weights into the graph: no per-call cost), so
the model holds its own steps: nothing global refers to either, and dropping the model
frees both. Each model keeps at most `MAX_STEPS`, the least recently used going first.

    >>> step = step_cache.get(model, key, lambda name: build(name))
"""
from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from typing import Callable

MAX_STEPS = 64   # per model: recipe structures x sequence buckets one process decodes with
_ATTR = "_decode_steps"
STEP = "the step for this recipe structure (once per machine and shape)"

_models: weakref.WeakSet = weakref.WeakSet()
_names = itertools.count()
_built = [0]  # steps built by this process, ever (`built`)


def get(model, key, build: Callable[[str], Callable], counted: bool = True) -> Callable:
    """The step for `key` of `model`, built with `build(name)` the first time (`name`: a name
    unique in the process, for the step's code object, where dynamo keeps its graphs);
    `counted`: a recipe's step, which `built` counts (the model's shared forward is not)."""
    steps = model.__dict__.get(_ATTR)
    if steps is None:
        steps = OrderedDict()
        object.__setattr__(model, _ATTR, steps)  # a plain attribute, also on an nn.Module
        _models.add(model)
    fn = steps.get(key)
    if fn is None:
        _built[0] += counted
        fn = steps[key] = build(f"decode_step_{next(_names)}")
        if len(steps) > MAX_STEPS:
            steps.popitem(last=False)
    else:
        steps.move_to_end(key)
    return fn


def built() -> int:
    """How many recipe steps this process has built so far (a count that only grows; the
    model's forward, shared by every recipe, is not one)."""
    return _built[0]


def size() -> int:
    """How many steps are kept, over all live models."""
    return sum(len(m.__dict__.get(_ATTR, ())) for m in list(_models))


def compile_step(fn: Callable, name: str, compiled: bool, cuda: bool, what: str = STEP,
                 options: dict | None = None) -> Callable:
    """`fn` with a code object of its own named `name` (dynamo keeps its compiled graphs on
    the code object, and every step is the same closure), compiled unless not `compiled`;
    `what` says what compiles, to whoever watches (kernel_cache.watch_compiles); `options`:
    inductor settings for this graph alone.

    The step runs without dynamo's per-call guard checks (they cost ~0.4 ms a step): the
    cache key names everything the graph depends on except tensor values."""
    import types

    import torch

    from decode.compiler.kernel_cache import first_call

    code = fn.__code__.replace(co_name=name)
    fn = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    if not compiled:
        return fn
    opts = dict(options or {})
    skip = getattr(torch.compiler, "skip_all_guards_unsafe", None)
    if skip is not None:
        opts["guard_filter_fn"] = skip
    if cuda:
        # "reduce-overhead": the step replays as one CUDA graph (the KV cache is marked
        # static by the engine, and the draws are computed in the graph)
        opts["triton.cudagraphs"] = True

    def make(fn=fn, opts=opts):
        return torch.compile(fn, fullgraph=True, dynamic=False, options=opts or None)

    return first_call(make(), fn, make, what)
