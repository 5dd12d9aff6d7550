"""`dynatemp T range=D [exponent=E]`: entropy-based dynamic temperature (llama.cpp's temp_ext).

Each row's temperature lies between max(0, T - D) and T + D, placed by its normalised
entropy H / log(n), n its tokens still possible, raised to E: a confident row is cooled and
an uncertain one warmed. D = 0 is plain temperature T. A temperature of 0 (or below 1e-20)
keeps only the most likely token (the first of tied ones), as llama.cpp's does.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF

STATIC = frozenset()
COLDEST = 1e-20  # a smaller divisor could overflow a logit to inf (see dsl/spec.py SCALE)


def apply(logits: torch.Tensor, ctx, t, range, exponent=1.0) -> torch.Tensor:  # noqa: A002
    n = torch.isfinite(logits).sum(-1, keepdim=True)
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).nansum(-1, keepdim=True)  # 0 * -inf is nan: skip it
    lo, hi = (t - range).clamp(min=0), t + range
    dynamic = lo + (hi - lo) * (entropy / n.clamp(min=2).float().log()).pow(exponent)
    temp = torch.where(range > 0, dynamic, t)
    first_max = torch.arange(logits.shape[-1], device=logits.device) == logits.argmax(-1, keepdim=True)
    out = torch.where(temp >= COLDEST, logits / temp.clamp(min=COLDEST), logits.masked_fill(~first_max, NEG_INF))
    return torch.where((n > 1) | (range <= 0), out, logits)  # one possible token: llama.cpp leaves it
