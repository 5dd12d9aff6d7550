"""`beam K | capped G`: top-g capping (Ippolito, Kriz, Sedoc, Kustikova & Callison-Burch 2019,
"Comparison of Diverse Decoding Methods from Conditional Language Models", ACL 2019).

Each beam contributes at most G continuations: only its G most likely children (by processed
log-prob; of equal ones, the lower token id) compete for the 2K candidates, the others are
out. Everything else is `beam` (the pool, `early`, lenpen, beam sampling); G = V is plain
beam search, G = 1 keeps every beam on its own best child.
"""
from __future__ import annotations

import torch

from decode.compiler.search.beam import Beam


class Capped(Beam):
    def hyper(self):
        return {**super().hyper(), "g": float(self.cfg.modifiers["capped"]["g"])}

    def rescore(self, acc, logp, hp):
        order = torch.argsort(logp, dim=-1, descending=True, stable=True)        # [B, K, V]
        ranks = torch.arange(logp.shape[-1], device=acc.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(-1, order, ranks)                # 0: the best child
        return acc.masked_fill((rank >= hp["g"]).view_as(acc), float("-inf")), None


STRATEGY = Capped


def wrap(strategy):
    """`capped` modifies a beam search."""
    return Capped
