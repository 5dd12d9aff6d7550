"""`temp T`: divide the logits by T (transformers' TemperatureLogitsWarper).

T = 0 means argmax, which the engine does itself; here T <= 0 leaves the logits
unchanged rather than dividing by zero.
"""
from __future__ import annotations

import torch

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, t) -> torch.Tensor:
    t = torch.as_tensor(t, device=logits.device)
    return torch.where(t > 0, logits / t, logits)
