"""`epsilon E`: drop tokens with probability below E (Hewitt et al. 2022; EpsilonLogitsWarper).

The `keep` most likely tokens (and every token tied with the last of them) survive.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, kth_largest

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, e, keep=1) -> torch.Tensor:
    drop = (logits.softmax(dim=-1) < e) & (logits < kth_largest(logits, keep))
    return logits.masked_fill(drop, NEG_INF)
