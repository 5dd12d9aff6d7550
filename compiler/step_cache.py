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

_models: weakref.WeakSet = weakref.WeakSet()
_names = itertools.count()


def get(model, key, build: Callable[[str], Callable]) -> Callable:
    """The step for `key` of `model`, built with `build(name)` the first time (`name`: a name
    unique in the process, for the step's code object, where dynamo keeps its graphs)."""
    steps = model.__dict__.get(_ATTR)
    if steps is None:
        steps = OrderedDict()
        object.__setattr__(model, _ATTR, steps)  # a plain attribute, also on an nn.Module
        _models.add(model)
    fn = steps.get(key)
    if fn is None:
        fn = steps[key] = build(f"decode_step_{next(_names)}")
        if len(steps) > MAX_STEPS:
            steps.popitem(last=False)
    else:
        steps.move_to_end(key)
    return fn


def size() -> int:
    """How many steps are kept, over all live models."""
    return sum(len(m.__dict__.get(_ATTR, ())) for m in list(_models))
