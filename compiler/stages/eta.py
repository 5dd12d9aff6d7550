"""`eta E`: entropy-dependent epsilon (Hewitt et al. 2022; transformers' EtaLogitsWarper).

Drop tokens with probability below min(E, sqrt(E) * exp(-entropy)); the `keep` most likely
tokens survive. The entropy is computed as torch.distributions.Categorical does, so that
it matches the reference to the bit.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, kth_largest

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, e, keep=1) -> torch.Tensor:
    e = torch.as_tensor(e, dtype=torch.float32, device=logits.device)
    logprobs = logits - logits.logsumexp(dim=-1, keepdim=True)
    finite = logprobs.clamp(min=torch.finfo(logprobs.dtype).min)  # so that 0 * -inf is 0
    entropy = -(finite * logprobs.softmax(dim=-1)).sum(-1)
    eta = torch.minimum(e, torch.sqrt(e) * torch.exp(-entropy))[..., None]
    drop = (logits.softmax(dim=-1) < eta) & (logits < kth_largest(logits, keep))
    return logits.masked_fill(drop, NEG_INF)
