"""Assisted (speculative) decoding with a draft model (Leviathan et al. 2023; Chen et al.
2023; transformers' assistant_model): a small model of the same tokenizer proposes K tokens
with the recipe's own stages and selection, the target verifies them in one forward
(speculative.py). A modifier of greedy decoding and sampling: greedy gives greedy's tokens,
sampling the distribution of plain sampling with the same stages."""
from __future__ import annotations

import torch

from decode.compiler.search._draft_model import load_draft
from decode.compiler.search.draw import draw
from decode.compiler.speculative import DRAFT


class DraftModel:
    name = "draft"

    def __init__(self, path: str, k: int):
        self.path, self.k, self.model = path, k, None

    def check(self, ids) -> None:
        """Nothing to refuse before loading: the draft's vocabulary is checked when it loads."""

    def structure(self) -> tuple:
        return ("draft", self.path, self.k)

    def begin(self, target, rows, width, seq, pad, p_len):
        """The draft's cache, with the prompts run but their last token (as the target's)."""
        self.model = load_draft(target, self.path)
        cache = self.model.new_cache(rows, width)
        if p_len > 1:
            self.model.prefill(cache, seq[:, :p_len - 1], pad)
        return cache

    def propose(self, frame, cache, seq, length, new, sampling):
        """(drafts [R, K], their processed scores [R, K, V], K [R]): K draft forwards a row."""
        R = seq.shape[0]
        start = (length - 2).clamp(min=0)  # the last two tokens: the round before kept up to 2
        two = seq.gather(1, start[:, None] + torch.arange(2, device=seq.device))
        lg = self.model.verify(cache, two, start, frame.pad)
        lg = lg.gather(1, (length - 1 - start)[:, None, None].expand(R, 1, lg.shape[-1]))[:, 0]
        drafts, scores = [], []
        for i in range(self.k):
            x = frame.process(lg, seq, length + i, new + i)
            d = (draw(x, frame.noise(new + i)[:, DRAFT:DRAFT + 1])[:, 0] if sampling
                 else torch.argmax(x, dim=-1))
            drafts.append(d)
            scores.append(x)
            seq = seq.scatter(1, (length + i)[:, None], d[:, None])
            if i + 1 < self.k:
                lg = self.model.verify(cache, d[:, None], length + i, frame.pad)[:, 0]
        return torch.stack(drafts, 1), torch.stack(scores, 1), torch.full_like(length, self.k)


def wrap(strategy):
    class Drafted(strategy):
        proposes = DraftModel.name  # speculative_run.refuse_stages, before any run

        def __init__(self, cfg):
            super().__init__(cfg)
            own = cfg.modifiers["draft"]
            self.proposer = DraftModel(str(own["path"]), int(own["k"]))

    return Drafted
