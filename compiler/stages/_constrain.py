"""The kernel of every constraint clause (`regex`, `json`, `grammar`, `choice`): a stage whose
state is the rows' allowed tokens, one bit per token ([R, ceil(V/32)] int32, bit j of word w
is token 32·w + j, llguidance's bitmask layout).

The matchers that compute the bits live on the host (compiler/constraint.py): the engine
writes each row's mask into this state before every step, after the rows moved with their
beams, so the compiled step only unpacks the bits and applies them. The clause's text is not
a parameter of the kernel: one compiled step serves every regex, schema and grammar.
"""
from __future__ import annotations

import math

import torch

STATIC = frozenset()
NEEDS = frozenset({"tokenizer"})
WORD = 32


def prepare(params: dict, tokenizer) -> dict:
    return {}  # the host side reads the clause's own parameters; the graph never does


def init(ctx, vocab: int) -> dict:
    """Every token allowed, until the host writes the first mask (also `decode.transform`'s
    view: it has no matcher, and refuses constraints before it gets here)."""
    words = -(-vocab // WORD)
    return {"mask": torch.full((ctx.tokens.shape[0], words), -1, dtype=torch.int32, device=ctx.tokens.device)}


def allowed(mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, V] bool from the bitmask [R, W] (an arithmetic shift: bit 31 reads right too)."""
    shifts = torch.arange(WORD, dtype=torch.int32, device=mask.device)
    bits = torch.bitwise_and(torch.bitwise_right_shift(mask[:, :, None], shifts), 1)
    return bits.reshape(mask.shape[0], -1)[:, :vocab].bool()


def apply(logits: torch.Tensor, ctx, state) -> torch.Tensor:
    return logits.masked_fill(~allowed(state["mask"], logits.shape[-1]), -math.inf)


def accept(state, tokens, scores) -> dict:
    return {}  # the host writes the next mask (the step returning its input would cost a copy or an alias)
