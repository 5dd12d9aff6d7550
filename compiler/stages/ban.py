"""`ban "text"...`: never complete one of the given token sequences
(transformers' NoBadWordsLogitsProcessor, `bad_words_ids`).

Each text becomes its token ids at compile time; the last token of a sequence is banned
whenever the history ends with the rest of it. As in the reference, a text that is
exactly one EOS token is ignored (banning EOS alone is what `minlen` is for).
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import (
    NEG_INF, check_ids, encode_all, eos_mask, prefix_matches, token_counts,
)

STATIC = frozenset({"ids"})
NEEDS = frozenset({"tokenizer", "eos"})  # text -> ids; a text that is EOS is ignored (transform checks)


def prepare(params: dict, tokenizer) -> dict:
    """{"words": [text, ...]} -> {"ids": ((id, ...), ...)}; given "ids" pass through."""
    if "ids" in params:
        return {"ids": tuple(dict.fromkeys(tuple(int(i) for i in s) for s in params["ids"]))}
    return {"ids": encode_all(params["words"], tokenizer)}


def apply(logits: torch.Tensor, ctx, ids) -> torch.Tensor:
    rows, vocab = logits.shape
    check_ids(ids, vocab)
    last = torch.tensor([s[-1] for s in ids], device=logits.device)
    single = torch.tensor([len(s) == 1 for s in ids], device=logits.device)
    hit = prefix_matches(ctx, ids) & ~(single & eos_mask(ctx, last))
    banned = token_counts(last.expand(rows, -1), hit, vocab) > 0
    return logits.masked_fill(banned, NEG_INF)
