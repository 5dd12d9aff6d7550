"""`minp P`: drop tokens less likely than P times the top token (transformers' MinPLogitsWarper)."""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, unsort

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    top = probs.max(dim=-1, keepdim=True).values
    drop = probs < p * top
    # the `keep` most likely survive; among ties argsort's order decides, as in the reference
    sorted_idx = torch.argsort(logits, descending=True, dim=-1)
    position = torch.arange(logits.shape[-1], device=logits.device)
    sorted_drop = drop.gather(-1, sorted_idx) & (position >= keep)
    return logits.masked_fill(unsort(sorted_drop, sorted_idx), NEG_INF)
