"""`typical P`: locally typical sampling (Meister et al. 2022; transformers' TypicalLogitsWarper).

Tokens are ranked by how far their surprisal is from the row's entropy; the closest ones
are kept until their probability mass reaches P (the token that crosses P included).
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, unsort

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    v = logits.shape[-1]
    logprobs = torch.log_softmax(logits, dim=-1)
    entropy = -(logprobs * logprobs.exp()).nansum(-1, keepdim=True)  # 0 * -inf is nan: skip it
    distance = torch.abs(-logprobs - entropy)
    sorted_distance, sorted_idx = torch.sort(distance, descending=False)
    cumulative = logits.gather(-1, sorted_idx).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < p).sum(dim=1, keepdim=True).clamp(max=v - 1)
    position = torch.arange(v, device=logits.device)
    sorted_drop = (sorted_distance > sorted_distance.gather(1, last)) & (position >= keep)
    return logits.masked_fill(unsort(sorted_drop, sorted_idx), NEG_INF)
