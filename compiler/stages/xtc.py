"""`xtc [threshold=0.1] [probability=0.5]`: Exclude Top Choices (p-e-w 2024), as llama.cpp's xtc.

With chance PROBABILITY per row and step, every token whose probability reaches THRESHOLD
is removed except the least likely of them, so when two or more tokens are likely the text
takes a less obvious one. The chance is the row's own draw from its random key (a stream
apart from selection's, so the same seed repeats it); a recipe that draws nothing (argmax)
has no chance to take, and xtc then removes nothing.
"""
from __future__ import annotations

import torch

from decode.compiler.noise import stream, uniform
from decode.compiler.stages._common import NEG_INF

STATIC = frozenset()
STREAM = 0x58544321  # "XTC!": its draws' stream (noise.stream), apart from selection's


def apply(logits: torch.Tensor, ctx, threshold, probability) -> torch.Tensor:
    if ctx.keys is None:
        return logits.clone()
    fires = uniform(stream(ctx.keys, STREAM), ctx.new_len, 1)[:, 0] <= probability  # llama.cpp: chance <= p
    p = torch.softmax(logits, dim=-1)
    top = p >= threshold
    least = torch.where(top, p, 2.0).argmin(-1, keepdim=True)  # of the top choices, it stays
    drop = top & (torch.arange(logits.shape[-1], device=logits.device) != least) & fires[:, None]
    return logits.masked_fill(drop, NEG_INF)
