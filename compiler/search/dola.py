"""DoLa (Chuang et al. 2023, "DoLa: Decoding by Contrasting Layers Improves Factuality in
Large Language Models", arXiv:2309.03883), as transformers 4.55.4's `_dola_decoding`.

A modifier of greedy decoding and sampling: each step the final logits are contrasted with
a premature layer's early exit (the model gives them in the same forward, `Search.exits`),
and the recipe's stages and selection work on the contrast as greedy works on logits.
The premature layer is the candidate furthest from the final layer by Jensen-Shannon
divergence (`_dola_select_contrast`), then the relative top filter (`_relative_top_filter`)
keeps the tokens at least 0.1 times as likely as the top one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from decode.compiler.search._dola import candidates
from decode.compiler.search.greedy import Greedy

RELATIVE_TOP = math.log(0.1)  # transformers' relative_top=0.1, as a log-probability gap
# A token the relative top filter drops scores its final log-prob plus FLOOR, not -inf: its
# probability is 0 all the same (exp underflows), but when a later stage removes every kept
# token (a constraint), the tokens it allows remain, ranked by the final layer. transformers
# then takes token 0 (argmax of -inf) or fails on NaN probabilities.
FLOOR = -1e4


class Dola(Greedy):
    def __init__(self, cfg):
        super().__init__(cfg)
        own = cfg.modifiers["dola"]
        self.listed, self.part, self.pick = tuple(own["layer"]), own["layers"], own["pick"]

    def exits(self, config):
        return candidates(config, self.listed, self.part)

    def step(self, scores, at, state):
        # rows whose mean divergence picks one layer: a prompt's own rows, or the whole batch
        together = self.rows if self.pick == "prompt" else scores.shape[0]
        return super().step(contrast(scores, at.exits, together), at, state)


def contrast(final: torch.Tensor, early: torch.Tensor, together: int) -> torch.Tensor:
    """[R, V]: log p(final) - log p(premature) where the relative top filter keeps a token,
    else log p(final) + FLOOR; `early` [E, R, V] are the candidates' logits, one choice per `together` rows."""
    base = early[0] if early.shape[0] == 1 else early[premature(final, early, together),
                                                       torch.arange(final.shape[0], device=final.device)]
    logp, base_logp = final.log_softmax(dim=-1), base.log_softmax(dim=-1)
    keep = logp >= logp.max(dim=-1).values[:, None] + RELATIVE_TOP
    return torch.where(keep, logp - base_logp, logp + FLOOR)


def premature(final: torch.Tensor, early: torch.Tensor, together: int) -> torch.Tensor:
    """[R] the index into `early` of each row's premature layer: the largest Jensen-Shannon
    divergence from the final distribution, averaged over each `together` rows, in
    transformers' arithmetic (so that near ties break as there)."""
    mid = 0.5 * (F.softmax(final, dim=-1)[None] + F.softmax(early, dim=-1))
    kl1 = F.kl_div(F.log_softmax(final, dim=-1)[None], mid, reduction="none").mean(-1)
    kl2 = F.kl_div(F.log_softmax(early, dim=-1), mid, reduction="none").mean(-1)
    js = 0.5 * (kl1 + kl2)                                          # [E, R]
    pick = js.view(js.shape[0], -1, together).mean(-1).argmax(0)    # [R / together]
    return pick[:, None].expand(-1, together).reshape(-1)


STRATEGY = Dola


def wrap(strategy):
    """`dola` turns greedy decoding or sampling (its check refuses other searches) into DoLa."""
    return Dola
