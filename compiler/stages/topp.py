"""`topp P`: nucleus sampling (transformers' TopPLogitsWarper).

The reference's definition: sort ascending, drop every token whose cumulative
probability is <= 1 - P, never the `keep` most likely ones. P = 1 keeps every token, as
transformers' `generate` does (it adds no top-p warper for top_p=1.0; the warper alone
would drop the tokens whose probability underflows to 0). How the cut is found (a sort,
or on CPU a radix search that equals it): _nucleus.py. `keep` is static: a sweep over P
reuses the compiled step.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._nucleus import nucleus

STATIC = frozenset({"keep"})


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    p = torch.as_tensor(p, device=logits.device, dtype=torch.float32)
    return torch.where(p >= 1, logits, nucleus(logits, p, int(keep)))
