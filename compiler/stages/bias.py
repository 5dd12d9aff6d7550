"""`bias "text" B`: add B to the logit that would complete the text's token sequence
(transformers' SequenceBiasLogitsProcessor, `sequence_bias`).

A one-token text is biased at every step; a longer one only when the history ends
with all of it but its last token.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import check_ids, encode_all, prefix_matches, token_counts

STATIC = frozenset({"ids"})


def prepare(params: dict, tokenizer) -> dict:
    """{"text": str, "b": B} -> {"ids": ((id, ...),), "b": B}; given "ids" pass through."""
    params = dict(params)
    if "ids" in params:
        ids = params.pop("ids")
        ids = (ids,) if ids and isinstance(ids[0], int) else ids
        return {"ids": tuple(dict.fromkeys(tuple(int(i) for i in s) for s in ids)), **params}
    return {"ids": encode_all(params.pop("text"), tokenizer), **params}


def apply(logits: torch.Tensor, ctx, ids, b) -> torch.Tensor:
    rows, vocab = logits.shape
    check_ids(ids, vocab)
    last = torch.tensor([s[-1] for s in ids], device=logits.device)
    hits = token_counts(last.expand(rows, -1), prefix_matches(ctx, ids), vocab)
    return torch.where(hits > 0, logits + b * hits, logits)
