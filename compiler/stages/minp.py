"""`minp P`: drop tokens less likely than P times the top token (transformers' MinPLogitsWarper).

With keep=1 (the default) the top token survives by definition, so no sort is needed; a
larger `keep` follows the reference's argsort order among ties, which needs the sort.
`keep` is static: a sweep over P reuses the compiled step, a change of keep recompiles.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, unsort

STATIC = frozenset({"keep"})


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    top = probs.max(dim=-1, keepdim=True).values
    drop = probs < p * top
    if int(keep) > 1:
        sorted_idx = torch.argsort(logits, descending=True, dim=-1)
        position = torch.arange(logits.shape[-1], device=logits.device)
        drop = unsort(drop.gather(-1, sorted_idx) & (position >= keep), sorted_idx)
    return logits.masked_fill(drop, NEG_INF)
