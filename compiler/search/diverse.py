"""Diverse beam search (Vijayakumar et al. 2016), as the reference's `_group_beam_search`:
beam search in groups (groups.py) whose log-probs first lose `penalty` times a count of
what earlier groups chose. `kind` says what is counted (dsl/catalogue.py has the
definitions): `hamming`, the token's choices by earlier groups at this step (the
reference); `cumulative`, at every step so far; `ngram`, the occurrences of the n-gram
the token completes in earlier groups' new text; `embedding`, the largest cosine of the
continuation's vector (its row's last hidden state and the token's output embedding,
_hidden.py) with those of earlier groups' choices at this step.

Diverse beam *sampling* (a recipe with a sampling stage; the reference refuses it) is the
same search with each group's continuations drawn instead of ranked.
"""
from __future__ import annotations

import torch

from decode.compiler.search._hidden import beside
from decode.compiler.search.groups import Groups
from decode.compiler.search.overlap import ngram_counts, pick_counts


class Diverse(Groups):
    modifier = "diverse"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kind = cfg.modifiers[self.modifier].get("kind", "hamming")
        self.hidden = "diverse kind=embedding" if self.kind == "embedding" else ""

    def hyper(self):
        return {**super().hyper(), "penalty": float(self.cfg.modifiers[self.modifier].get("penalty", 0.0))}

    def memory(self, device, seq_len):
        b, g, s = self.cfg.batch, self.groups, self.size
        if self.kind == "cumulative":  # the token each beam chose at each slot; -1: none counted
            return {"picks": torch.full((b, g, s, seq_len), -1, dtype=torch.long, device=device)}
        if self.kind == "ngram":       # new tokens each group wrote before it finished
            return {"until": torch.full((b, g), seq_len, dtype=torch.long, device=device)}
        return {}

    def penalise(self, g, own, at, chosen, earlier, memo):
        v, lam = chosen.shape[-1], at.hp["penalty"]
        if self.kind == "hamming":
            return (lam * chosen)[:, None, :]
        if self.kind == "embedding":  # group g's rows: [B, K/G] of the step's
            mine = torch.arange(self.cfg.batch, device=lam.device)[:, None] * self.rows + g * self.size
            return lam * beside(at, mine + torch.arange(self.size, device=lam.device), earlier).to(chosen.dtype)
        if self.kind == "cumulative":
            return (lam * pick_counts(memo["picks"][:, :g].flatten(1), v))[:, None, :]
        n = int(self.cfg.modifiers[self.modifier]["n"])
        return lam * ngram_counts(n, at.t, own, earlier, memo["until"], at.prompt, v)

    def remember(self, g, tok, was_done, now_done, at, memo):
        if self.kind == "cumulative":  # a finished group's padding is not a choice
            slot = (at.prompt + at.t).expand(*tok.shape, 1)
            mine = torch.where(was_done[:, None], -1, tok)
            picks = memo["picks"]
            return {"picks": torch.cat([picks[:, :g], picks[:, g].scatter(2, slot, mine[..., None])[:, None],
                                        picks[:, g + 1:]], 1)}
        if self.kind == "ngram":
            until = memo["until"]
            done_now = torch.where(now_done & ~was_done, at.t + 1, until[:, g])
            return {"until": torch.cat([until[:, :g], done_now[:, None], until[:, g + 1:]], 1)}
        return memo


STRATEGY = Diverse


def wrap(strategy):
    """`diverse` modifies a beam search into its group (diverse) form."""
    return Diverse
