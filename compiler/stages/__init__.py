"""Logit stages: one module per catalogue clause, each a pure tensor kernel.

Every module `decode.compiler.stages.<name>` defines

    apply(logits [R, V], ctx: StepContext, **params) -> logits [R, V]
    STATIC: frozenset[str]      params passed as Python values (a change recompiles)
    prepare(params, tokenizer) -> params     optional, run once on the host
    validate(params, vocab)     optional, on the host after prepare: a ValueError naming
                                the clause and the fix when the params do not fit the
                                model's vocabulary (token ids a recipe gives)
    tables(params, vocab, device) -> {name: tensor}   optional, once on the host: tensors
                                 built from the params and the vocabulary size, passed to
                                 apply as more params (watermark's greenlists)
    NEEDS: frozenset[str]       optional: "eos", "tokenizer" if the stage cannot work without

A stage may keep state, in llama.cpp's shape: with `init` it is stateful, and then

    init(ctx, vocab, **params) -> state      the state of every row after the prompt (reset)
    apply(logits, ctx, state, **params) -> logits
    accept(state, tokens [R], scores [R, V], **params) -> state   after the search chose

`state` is a dict of tensors whose first dimension is the row: the engine moves it with
the rows of a beam search, and `accept` sees the chosen tokens and this stage's own output
for each row (mirostat.py, repetition.py). A stage may also bring the chain's last link,
`select(logp [R, V], u [R, V]) -> ids [R]`, the draw of a row's token when the recipe
samples (mirostat selects by Gumbel-max, as llama.cpp's does); the last such stage wins.
A stage that draws at random itself reads `ctx.keys` ([R, 2], the rows' keys; None when the
recipe draws nothing) and hashes its own stream from them (noise.uniform; xtc.py), apart
from selection's draws, so a seed repeats it.

Numeric params not in STATIC arrive as 0-d tensors on the logits' device, so that a
parameter sweep reuses the compiled step. Removed tokens become -inf.

    >>> apply_stage("topk", logits, ctx, k=5)

Adding a built-in stage is this one file plus its `ClauseSpec` in dsl/catalogue.py with
`impl="decode.compiler.stages.<name>"`: the compiler finds kernels through the
catalogue's `impl`, never through a list of its own. A user stage is the same kernel
contract behind `@decode.stage` (compiler/plugins.py), with no file here.
"""
from __future__ import annotations

from types import ModuleType

import torch

from decode.compiler.context import StepContext
from decode.compiler.plan import load_impl
from decode.dsl import CATALOGUE


def builtin_names() -> tuple[str, ...]:
    """The catalogue's logit clauses whose kernel is a module of this package."""
    return tuple(s.name for s in CATALOGUE.values()
                 if s.kind == "logit" and isinstance(s.impl, str) and s.impl.startswith(__name__ + "."))


def load_stage(name: str) -> ModuleType:
    """The kernel of logit stage `name` (built-in or user), e.g. `load_stage("topp").apply`."""
    spec = CATALOGUE.get(name)
    if spec is None or spec.kind != "logit":
        raise ValueError(f"{name!r} is not a logit stage of the catalogue")
    return load_impl(name)


def tensor_params(module: ModuleType, params: dict, device) -> dict:
    """`params` with every numeric non-static value as a 0-d tensor (float32 or long),
    and every non-static list of floats as a 1-d float32 tensor."""
    static = getattr(module, "STATIC", frozenset())
    out = {}
    for key, value in params.items():
        if key in static or isinstance(value, (bool, torch.Tensor)):
            out[key] = value
        elif isinstance(value, int):
            out[key] = torch.tensor(value, dtype=torch.long, device=device)
        elif isinstance(value, float):
            out[key] = torch.tensor(value, dtype=torch.float32, device=device)
        elif isinstance(value, (list, tuple)) and value and all(type(x) is float for x in value):
            out[key] = torch.tensor(value, dtype=torch.float32, device=device)  # one per item
        else:
            out[key] = value
    return out


def apply_stage(name: str, logits: torch.Tensor, ctx: StepContext, tokenizer=None, **params):
    """Run stage `name` once, eagerly: prepare (if any), tensorise params, apply.

        >>> ctx = StepContext.from_input_ids(input_ids, eos_ids=[2])
        >>> apply_stage("topp", logits, ctx, p=0.9)
    """
    module = load_stage(name)
    params = tensor_params(module, _prepare(module, params, tokenizer, logits.shape[-1], logits.device),
                           logits.device)
    return run_kernel(module, logits, ctx, params)


def stateful(kernel) -> bool:
    """A stage keeps state when it has llama.cpp's `init` (reset) and `accept`."""
    return getattr(kernel, "init", None) is not None


def selection(kernels):
    """The draw of the last stage among `kernels` that brings its own (`select`), or None."""
    return next((k.select for k in reversed(list(kernels)) if hasattr(k, "select")), None)


def run_kernel(kernel, logits: torch.Tensor, ctx: StepContext, params: dict) -> torch.Tensor:
    """One application of a stage on its own: a stateful one starts from its `init` state."""
    if stateful(kernel):
        return kernel.apply(logits, ctx, kernel.init(ctx, logits.shape[-1], **params), **params)
    return kernel.apply(logits, ctx, **params)


def _prepare(module, params: dict, tokenizer, vocab: int | None, device) -> dict:
    prepare = getattr(module, "prepare", None)
    params = prepare(dict(params), tokenizer) if prepare is not None else params
    validate = getattr(module, "validate", None)
    if validate is not None and vocab is not None:  # before the step: a raise there is no message
        validate(params, vocab)
    tables = getattr(module, "tables", None)
    return {**params, **tables(params, vocab, device)} if tables is not None else params


def bind(module: ModuleType, params: dict, tokenizer, device, vocab: int | None = None) -> tuple[dict, dict]:
    """Host-side preparation for the compiled step: (static values, tensor values).

    Static values are part of the graph's structure; tensors are its inputs, so a
    change of a tensor value reuses the compiled graph. With `vocab` (the model's
    vocabulary size) a stage's `validate` checks the token ids it was given.
    """
    bound = tensor_params(module, _prepare(module, params, tokenizer, vocab, device), device)
    static = {k: v for k, v in bound.items() if not isinstance(v, torch.Tensor)}
    tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
    return static, tensors
