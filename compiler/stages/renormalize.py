"""`renormalize`: log-softmax the scores (transformers' LogitNormalization,
`renormalize_logits=True`, which always runs last), so that a beam search adds
normalised log-probabilities after stages that moved the mass. Greedy and sampling
choose the same tokens with or without it.
"""
from __future__ import annotations

import torch

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1)
