"""How far a quantized model strays from its float32 original: the share of identical greedy
tokens and the largest logit error, on the same prompts (README, benchmarks/int8_accuracy.py).

    >>> agreement(decode.load(), decode.load(dtype="int8"), PROMPTS, new=32)
    {'prompts': 20, 'tokens': 640, 'identical': 0.866, 'whole': 0.8, 'max_logit_err': 0.273, ...}
"""
from __future__ import annotations

import torch

from decode.compiler.engine import generate


def agreement(ref, other, prompts: list[str], new: int = 32) -> dict:
    """Greedy `new` tokens per prompt from both models (eager, one batch each).

    identical: the share of token positions where `other` chose the reference's token;
    whole: the share of prompts whose continuation is identical throughout;
    max_logit_err: the largest |logit difference| over every vocabulary entry at every
    position of prompt + the reference's continuation (teacher forced, so the two models
    read the same text), and logit_range: the reference's max - min logit there, to scale it.
    """
    recipe = f"greedy | max {new}"
    a = [c.sequences[0].ids for c in generate(ref, recipe, prompts, compile=False)]
    b = [c.sequences[0].ids for c in generate(other, recipe, prompts, compile=False)]
    same = sum(x == y for sa, sb in zip(a, b) for x, y in zip(sa, sb))
    total = sum(max(len(sa), len(sb)) for sa, sb in zip(a, b))
    err, lo, hi = 0.0, float("inf"), float("-inf")
    with torch.inference_mode():
        for p, cont in zip(prompts, a):
            ids = torch.tensor([ref.tokenizer.encode(p) + cont], device=ref.tok_embeddings.weight.device)
            la, lb = ref(ids), other(ids)
            err = max(err, (la - lb).abs().max().item())
            lo, hi = min(lo, la.min().item()), max(hi, la.max().item())
    return {"prompts": len(prompts), "tokens": total, "identical": same / total,
            "whole": sum(sa == sb for sa, sb in zip(a, b)) / len(prompts),
            "max_logit_err": err, "logit_range": hi - lo}
