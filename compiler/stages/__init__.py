"""Logit stages: one module per catalogue clause, each a pure tensor kernel.

Every module `decode.compiler.stages.<name>` defines

    apply(logits [R, V], ctx: StepContext, **params) -> logits [R, V]
    STATIC: frozenset[str]      params passed as Python values (a change recompiles)
    prepare(params, tokenizer) -> params     optional, run once on the host

Numeric params not in STATIC arrive as 0-d tensors on the logits' device, so that a
parameter sweep reuses the compiled step. Removed tokens become -inf.

    >>> apply_stage("topk", logits, ctx, k=5)
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch

from decode.compiler.context import StepContext

NAMES = (
    "temp", "topk", "topp", "minp", "typical", "epsilon", "eta", "topnsigma",
    "repetition", "presence", "frequency", "norepeat", "minlen", "ban", "bias",
)


def load_stage(name: str) -> ModuleType:
    """The kernel module of stage `name`, e.g. `load_stage("topp").apply`."""
    return importlib.import_module(f"decode.compiler.stages.{name}")


def tensor_params(module: ModuleType, params: dict, device) -> dict:
    """`params` with every numeric non-static value as a 0-d tensor (float32 or long),
    and every non-static list of floats as a 1-d float32 tensor."""
    out = {}
    for key, value in params.items():
        if key in module.STATIC or isinstance(value, (bool, torch.Tensor)):
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
    if hasattr(module, "prepare"):
        params = module.prepare(dict(params), tokenizer)
    return module.apply(logits, ctx, **tensor_params(module, params, logits.device))


def bind(module: ModuleType, params: dict, tokenizer, device) -> tuple[dict, dict]:
    """Host-side preparation for the compiled step: (static values, tensor values).

    Static values are part of the graph's structure; tensors are its inputs, so a
    change of a tensor value reuses the compiled graph.
    """
    if hasattr(module, "prepare"):
        params = module.prepare(dict(params), tokenizer)
    bound = tensor_params(module, params, device)
    static = {k: v for k, v in bound.items() if not isinstance(v, torch.Tensor)}
    tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
    return static, tensors
