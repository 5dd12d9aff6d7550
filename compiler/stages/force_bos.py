"""`force_bos TOKEN`: a row whose history is a single token takes TOKEN next (transformers'
ForcedBOSTokenLogitsProcessor, `forced_bos_token_id`): every other token scores -inf and
TOKEN scores 0. For a decoder-only model that is the first new token after a one-token
prompt; the history counted is the row's own (the reference counts a batch's padding).
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, in_vocab

STATIC = frozenset()


def validate(params: dict, vocab: int) -> None:
    in_vocab("force_bos", [params["token"]], vocab)


def apply(logits: torch.Tensor, ctx, token) -> torch.Tensor:
    only = torch.arange(logits.shape[-1], device=logits.device) == token
    forced = torch.where(only, 0.0, NEG_INF).to(logits.dtype)
    return torch.where(ctx.valid.sum(-1, keepdim=True) == 1, forced, logits)
