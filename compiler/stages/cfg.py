"""Classifier-free guidance (Sanchez et al. 2023), as transformers'
UnbatchedClassifierFreeGuidanceLogitsProcessor: with u the log-probabilities of the row's
unconditional row, the scores become SCALE·(log_softmax(x) - u) + u.

The engine decodes every row's unconditional row (its prompt: `unconditional`) in the same
batched step and hands its logits to this stage as `ctx.guide` (compiler/guidance.py).
"""
from __future__ import annotations

import torch

STATIC = frozenset()
NEEDS = frozenset({"guide"})  # the unconditional rows' logits (decode.transform checks)


def prepare(params: dict, tokenizer) -> dict:
    return {"scale": params["scale"]}  # the negative prompt reaches the engine by `unconditional`


def unconditional(params: dict, encode, prompt: list[int]) -> list[int]:
    """The unconditional row's prompt: the negative one encoded as prompts are (`encode`),
    else the prompt's last token (transformers' default)."""
    return prompt[-1:] if params["negative"] is None else encode(params["negative"])


def apply(logits: torch.Tensor, ctx, scale) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    u = torch.log_softmax(ctx.guide.to(logp.dtype), dim=-1)
    return scale * (logp - u) + u
