"""`topnsigma N`: keep logits within N standard deviations of the max (Tang et al. 2024,
"Top-nσ: Not All Logits Are You Need").

No reference library has it. Defined as llama.cpp does: the mean and the (population)
standard deviation are taken over the finite logits of the row only, so tokens that an
earlier stage removed (-inf) do not inflate sigma; keep logit >= max - N * sigma. The
max itself always survives, so a row with one finite logit keeps exactly that one.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, n) -> torch.Tensor:
    finite = logits > NEG_INF
    count = finite.sum(-1, keepdim=True).clamp(min=1)
    mean = torch.where(finite, logits, 0.0).sum(-1, keepdim=True) / count
    var = torch.where(finite, (logits - mean) ** 2, 0.0).sum(-1, keepdim=True) / count
    top = logits.max(dim=-1, keepdim=True).values
    keep = (logits >= top - n * var.sqrt()) | (logits == top)
    return logits.masked_fill(~keep, NEG_INF)
