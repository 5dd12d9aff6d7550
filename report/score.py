"""The log-probability of returned text under a model: one full forward per sequence, no cache.

    >>> score(points(lines), decode.load())      # fills each Point's logp_sum and logp_tokens
"""
from __future__ import annotations

import torch

from decode.report.metrics import Point


@torch.inference_mode()
def score(found: list[Point], model) -> None:
    """Add to each point the summed log-prob of its sequences' new tokens given their prompts."""
    device = next(model.parameters()).device
    for p in found:
        for prompt, new in zip(p.contexts, p.seqs):
            if not new:
                continue
            ids = torch.tensor([prompt + new], device=device)
            logp = torch.log_softmax(model(ids)[0, len(prompt) - 1:-1].float(), dim=-1)
            p.logp_sum += float(logp.gather(1, ids[0, len(prompt):, None]).sum())
            p.logp_tokens += len(new)
