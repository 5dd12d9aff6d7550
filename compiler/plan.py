"""Lowering: a checked Recipe (IR) -> a Plan the engine can run.

Dispatch goes through the catalogue: each clause's `impl` names the module that carries
it out (a stage kernel or a search strategy), so there is no second list of names here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from decode.compiler.search.base import SearchConfig
from decode.dsl import Recipe, lookup, parse


@dataclass(frozen=True)
class Stage:
    """One logit stage in application order: its clause name, kernel and values.

    The kernel is a stage module (`decode.compiler.stages.topp`) or a user stage's
    `plugins.Kernel`; both have `apply`, `STATIC` and optionally `prepare`.
    """

    name: str
    kernel: ModuleType | object
    params: dict


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    search: type                 # a Search subclass
    search_params: dict
    modifiers: dict              # modifier name -> params (e.g. diverse)
    stages: tuple[Stage, ...]
    sampling: bool
    max_new: int
    stop: tuple[str, ...] = ()
    seed: int | None = None
    random: bool = False         # the run draws (sampling, or a clause such as npad): it is seeded


def load_impl(name: str) -> object:
    """What carries out clause `name`: the module its catalogue `impl` names, or the
    object itself (a user stage's kernel)."""
    spec = lookup(name)
    impl = spec.impl if spec is not None else None
    if impl is None:
        raise ValueError(f"clause {name!r} has no implementation")
    return importlib.import_module(impl) if isinstance(impl, str) else impl


_WRAPPED: dict = {}


def _wrapped(module, strategy):
    """`module.wrap(strategy)`, made once per (module, strategy): a wrap that defines its class
    inside the call (draft, lookup) must give the same class every run, since the class is part
    of the compiled step's key (Search.structure)."""
    wrap = getattr(module, "wrap", None)
    if wrap is None:
        return strategy
    key = (module, strategy)
    if key not in _WRAPPED:
        _WRAPPED[key] = wrap(strategy)
    return _WRAPPED[key]


def _params(clause) -> dict:
    return dict(clause.params)


def _stage_params(clause, recipe: Recipe) -> dict:
    """A stage's kernel parameters: its own, or what its entry's `lower` makes of them."""
    lower = clause.spec.lower
    return _params(clause) if lower is None else lower(_params(clause), recipe)


def compile(recipe: Recipe | str) -> Plan:  # noqa: A001 - the design's name
    """Lower a recipe to a Plan.

        >>> plan = compile("beam 4 lenpen=0.6 | max 32")
        >>> plan.search.__name__
        'Beam'
    """
    if isinstance(recipe, str):
        recipe = parse(recipe)
    search_clause = recipe.search
    modifiers = {m.name: _params(m) for m in recipe.modifiers}
    module = load_impl(search_clause.name)
    # a built-in names its module (which has STRATEGY); a user's search is the class itself
    strategy = module if isinstance(module, type) else module.STRATEGY
    for m in recipe.modifiers:
        # a modifier may replace the strategy (diverse turns a beam search into group beam search)
        strategy = _wrapped(load_impl(m.name), strategy)
    stages = tuple(Stage(c.name, load_impl(c.name), _stage_params(c, recipe)) for c in recipe.stages)
    return Plan(
        recipe=recipe,
        search=strategy,
        search_params=_params(search_clause),
        modifiers=modifiers,
        stages=stages,
        sampling=recipe.sampling,
        max_new=recipe.max_new_tokens,
        stop=tuple(recipe.stop_strings),
        seed=recipe.seed,
        random=recipe.random,
    )


def returns_per_prompt(plan: Plan) -> int:
    """How many sequences `plan` returns per prompt, as its search says (`returns`).

        >>> returns_per_prompt(compile("beam 4 return=2"))
        2
    """
    search = plan.search(SearchConfig(batch=1, params=plan.search_params, modifiers=plan.modifiers,
                                      sampling=plan.sampling))
    return search.returns


def structure(plan: Plan) -> tuple:
    """What the compiled step of `plan` depends on besides the model, the shapes and tensor
    values: two plans with equal structures share one compiled step (a sweep's points, say).

        >>> structure(compile("topp 0.8")) == structure(compile("topp 0.9"))
        True
    """
    import torch

    from decode.compiler.stages import tensor_params
    from decode.dsl import lookup

    search = plan.search(SearchConfig(batch=1, params=plan.search_params, modifiers=plan.modifiers,
                                      sampling=plan.sampling))
    stages = []
    for st in plan.stages:
        bound = tensor_params(st.kernel, search.stage_params(lookup(st.name), dict(st.params)), "cpu")
        stages.append((st.name, tuple(sorted((k, repr(v)) for k, v in bound.items()
                                             if not isinstance(v, torch.Tensor)))))
    # max sets the cache length (rounded up to a bucket), which is a shape of the step
    return search.structure(), tuple(stages), plan.max_new
