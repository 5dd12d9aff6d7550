"""`topp P`: nucleus sampling (transformers' TopPLogitsWarper).

The reference's definition: sort ascending, drop every token whose cumulative
probability is <= 1 - P, never the `keep` most likely ones. Among tied logits the
sort order (torch.sort's, as in the reference) decides which are dropped.
P arrives as a float32 tensor, so 1 - P can differ from the reference's float64 1 - P
in the last float32 bit: a cumulative sum landing exactly there is cut differently.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, unsort

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    v = logits.shape[-1]
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    position = torch.arange(v, device=logits.device)
    drop = (cumulative <= 1 - p) & (position < v - keep)
    return logits.masked_fill(unsort(drop, sorted_idx), NEG_INF)
