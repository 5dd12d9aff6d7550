"""The step functions of this process, kept per model.

A step (compiled or not) is built once per model, recipe structure and shape, then reused.
The model is not captured by the step: it is passed in on every call, so that the steps
can be held by the model weakly. Dropping a model frees it and its steps; each model
keeps at most `MAX_STEPS`, the least recently used going first.

    >>> step = step_cache.get(model, key, lambda name: build(name))
"""
from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from typing import Callable

MAX_STEPS = 64   # per model: recipe structures x sequence buckets one process decodes with

_by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_names = itertools.count()


def get(model, key, build: Callable[[str], Callable]) -> Callable:
    """The step for `key` of `model`, built with `build(name)` the first time (`name`: a name
    unique in the process, for the step's code object, where dynamo keeps its graphs)."""
    steps = _by_model.get(model)
    if steps is None:
        steps = _by_model[model] = OrderedDict()
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
    return sum(len(steps) for steps in _by_model.values())
