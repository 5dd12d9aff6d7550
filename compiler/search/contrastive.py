"""`contrastive k=K alpha=A`: contrastive search (Su et al. 2022), as transformers'
`_contrastive_search` (generate(penalty_alpha=A, top_k=K)).

Each step, a row's K most likely tokens (softmax of the processed logits) run one step
ahead in one batched forward (`at.ahead`). Candidate j scores (1-A)·p_j - A·s_j, s_j the
largest cosine similarity between its last hidden state and those of the row's text so far
(prompt, padding left out, and the tokens chosen); the best is taken (`at.take`): its
look-ahead is the row's next step, and its hidden state joins the row's context.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Choice, Search
from decode.runtime.errors import ModelError


def unit(h: torch.Tensor) -> torch.Tensor:
    """Hidden states [.., dim] scaled to length 1, as the reference's `_ranking_fast`."""
    return h / h.norm(dim=-1, keepdim=True)


class Contrastive(Search):
    logprobs = False  # the reference processes raw logits, as in greedy search

    def __init__(self, cfg):
        super().__init__(cfg)
        self.ahead = int(cfg.params["k"])
        if cfg.vocab and self.ahead > cfg.vocab:
            raise ModelError(f"contrastive k={self.ahead} asks for more candidates than this model "
                             f"has tokens ({cfg.vocab}); use k <= {cfg.vocab}")

    def hyper(self):
        # both factors as the reference rounds them: float32 of (1 - A) computed in double
        return {"alpha": self.cfg.params["alpha"], "trust": 1.0 - self.cfg.params["alpha"]}

    def prompted(self, state, hidden, seq_len):
        ctx = hidden.new_zeros(hidden.shape[0], seq_len, hidden.shape[2])
        ctx[:, : hidden.shape[1]] = unit(hidden)
        return {**state, "own": {"ctx": ctx}}

    def step(self, scores, at, state):
        x = at.process(scores, None)
        prob, cand = torch.topk(torch.softmax(x, dim=-1), self.ahead, dim=-1)  # [R, K]
        _, hidden = at.ahead(cand)
        ctx = state["ctx"]  # [R, S, dim]: unit hidden states of the row's slots so far
        slots = torch.arange(ctx.shape[1], device=ctx.device)
        seen = (slots[None] >= at.pad[:, None]) & (slots[None] < at.prompt + at.t)
        cos = torch.matmul(ctx, unit(hidden).transpose(1, 2))  # [R, S, K]
        penalty = cos.masked_fill(~seen[:, :, None], float("-inf")).amax(dim=1)
        pick = (at.hp["trust"] * prob - at.hp["alpha"] * penalty).argmax(dim=-1)  # [R]
        at.take(pick)
        tok = cand.gather(1, pick[:, None])[:, 0]
        chosen = hidden.gather(1, pick.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1]))
        ctx = ctx.index_copy(1, (at.prompt + at.t).view(1), unit(chosen))
        logp = torch.log_softmax(x, dim=-1).gather(1, tok[:, None])[:, 0]
        return Choice(tok, None, at.score + logp, {"ctx": ctx})


STRATEGY = Contrastive
