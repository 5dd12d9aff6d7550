"""`topk K`: keep the K most likely tokens (transformers' TopKLogitsWarper).

Every token tied with the K-th largest logit is kept, as in the reference.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, kth_largest

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, k, keep=1) -> torch.Tensor:
    k = torch.clamp(torch.as_tensor(k, device=logits.device), min=keep)
    return logits.masked_fill(logits < kth_largest(logits, k), NEG_INF)
