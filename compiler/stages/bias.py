"""`bias "text" B`: add B to the logit that would complete the text's token sequence
(transformers' SequenceBiasLogitsProcessor): a one-token text at every step, a longer one
when the history ends with all but its last token. Biases on one token add up in the
reference's order (float sums depend on it): one-token sequences first, then the rest."""
from __future__ import annotations

import torch

from decode.compiler.stages._common import check_ids, encode_all, prefix_matches

STATIC = frozenset({"ids"})
NEEDS = frozenset({"tokenizer"})  # text -> ids (decode.transform checks)


def prepare(params: dict, tokenizer) -> dict:
    """{"text" or "ids", "b"} -> {"ids": ((id, ...), ...), "b"}: one sequence or several; a
    sequence given twice keeps its last bias, as the reference's dict does."""
    params = dict(params)
    ids = params.pop("ids", None)
    if ids is not None:
        seqs = [tuple(int(i) for i in s) for s in ([ids] if ids and isinstance(ids[0], int) else ids)]
    else:
        text = params.pop("text")
        seqs = [encode_all(t, tokenizer)[0] for t in ([text] if isinstance(text, str) else text)]
    b = params.pop("b")
    if isinstance(b, (list, tuple)):
        merged = dict(zip(seqs, (float(x) for x in b)))
        order = sorted(merged, key=lambda s: len(s) > 1)  # stable: the one-token ones first
        return {"ids": tuple(order), "b": [merged[s] for s in order], **params}
    return {"ids": tuple(dict.fromkeys(seqs)), "b": b, **params}


def apply(logits: torch.Tensor, ctx, ids, b) -> torch.Tensor:
    rows, vocab = logits.shape
    check_ids(ids, vocab)
    last = torch.tensor([s[-1] for s in ids], device=logits.device).expand(rows, -1)
    b = torch.as_tensor(b, dtype=torch.float32, device=logits.device).expand(len(ids))
    added = torch.where(prefix_matches(ctx, ids), b, 0.0)                 # [R, Q]
    bias = torch.zeros_like(logits).scatter_add(1, last, added.to(logits.dtype))
    return logits + bias
