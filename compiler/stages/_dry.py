"""DRY's machinery (dry.py): the repeats a row's next token would extend, kept as running state.

For a history h[0..L-1], run[j] (j < L-1) is the length of the longest common suffix of
h[..j] and h[..L-1]: the last run[j] tokens also stand just before slot j+1, so the token
h[j+1] would extend a repeat of that length. Appending a token x gives
run'[j] = run[j-1] + 1 where h[j] = x, else 0: one pass over the slots per token, where
llama.cpp runs its Z-algorithm over the window each step. A restart sequence (a breaker)
caps every repeat at the tokens written after its last occurrence, as in llama.cpp.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FLOAT_MAX_LOG = 88.7228391  # llama.cpp: log of the largest float, to clamp base**exponent


def extend(hist: torch.Tensor, run: torch.Tensor, x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """run after token x [R] is appended at slot `at` [R] of `hist` [R, S] (-1: no token)."""
    before = torch.arange(hist.shape[1], device=hist.device) < at[:, None]
    return torch.where((hist == x[:, None]) & before & (x[:, None] >= 0), F.pad(run[:, :-1], (1, 0)) + 1, 0)


def history(ctx) -> dict:
    """The state after the history of `ctx`, the prompt's tokens appended one by one (eagerly)."""
    hist = torch.where(ctx.valid, ctx.tokens, -1)
    rows, slots = hist.shape
    run = torch.zeros_like(hist)
    for at in range(int(ctx.length)):
        run = extend(hist, run, hist[:, at], torch.full((rows,), at, device=hist.device))
    return {"hist": hist, "run": run, "len": torch.full((rows,), int(ctx.length), device=hist.device)}


def limit(hist: torch.Tensor, length: torch.Tensor, start: torch.Tensor, breakers) -> torch.Tensor:
    """[R, 1] the longest repeat the restart sequences allow: the tokens after the one whose
    head is nearest the end (its longest complete tail), as llama.cpp's step 1."""
    slots = torch.arange(hist.shape[1], device=hist.device)
    tail = torch.full_like(hist, -1)  # per head slot: the longest tail of a breaker found there
    for seq in breakers:
        found = torch.ones_like(hist, dtype=torch.bool)
        for o, tok in enumerate(seq):  # slots past the history hold -1: a tail cut short never matches
            found = found & (F.pad(hist[:, o:], (0, o), value=-1) == tok)
        tail = torch.where(found, torch.clamp(tail, min=len(seq) - 1), tail)
    head = torch.where((tail >= 0) & (slots >= start) & (hist >= 0), slots, -1).amax(-1, keepdim=True)
    cap = length - 1 - head - tail.gather(1, head.clamp(min=0))
    return torch.where(head >= 0, cap, hist.shape[1])


def penalty(logits: torch.Tensor, state: dict, multiplier, base, allowed, breakers, last) -> torch.Tensor:
    """[R, V] what DRY subtracts: multiplier·base^(n - allowed) from each token that would extend
    a repeat of n >= allowed tokens in the window (single-token breakers excepted)."""
    hist, run, length = state["hist"], state["run"], state["len"][:, None]
    slots = torch.arange(hist.shape[1], device=hist.device)
    start = length - last if last is not None else torch.zeros_like(length)  # the window's first slot
    cap = torch.minimum(torch.minimum(run, slots - start + 1), limit(hist, length, start, breakers))
    nxt = F.pad(hist[:, 1:], (0, 1), value=-1)
    ok = (slots >= start) & (slots < length - 1) & (hist >= 0) & (cap >= allowed)
    singles = [seq[0] for seq in breakers if len(seq) == 1]  # never penalised: their slots write nothing
    if singles:  # (a mask over the vocabulary instead cost more than the rest of the stage)
        ok = ok & ~(nxt[..., None] == torch.tensor(singles, device=hist.device)).any(-1)
    top = torch.where(base > 1.000001, torch.floor(FLOAT_MAX_LOG / torch.log(base)), float("inf"))
    # the size per slot (the power grows with the repeat: its largest over a token's slots is
    # the size of its longest repeat), so the power runs over the history, not the vocabulary
    size = multiplier.double() * torch.pow(base.double(), torch.minimum(cap - allowed, top).double())
    return torch.zeros_like(logits).scatter_reduce(1, nxt.clamp(min=0), torch.where(ok, size, 0.0).to(logits.dtype),
                                                   "amax")
