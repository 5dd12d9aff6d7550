"""`minlen N`: no end-of-sequence while a row holds fewer than N tokens, its prompt
included (transformers' MinLengthLogitsProcessor, `min_length`; `minnew` counts new
tokens only). A row's length is its own: in a left-padded batch the reference counts
the padding too, so there it ends rows with a shorter prompt sooner.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, eos_mask

STATIC = frozenset()
NEEDS = frozenset({"eos"})  # without EOS ids it would do nothing (decode.transform checks)


def apply(logits: torch.Tensor, ctx, n) -> torch.Tensor:
    is_eos = eos_mask(ctx, torch.arange(logits.shape[-1], device=logits.device))
    return torch.where(is_eos & (ctx.valid.sum(-1, keepdim=True) < n), NEG_INF, logits)
