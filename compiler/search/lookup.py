"""Prompt lookup decoding (Saxena 2023; transformers' prompt_lookup_num_tokens): the drafts
are the tokens that followed the last earlier occurrence of the row's last n tokens (n-1,
.. 1 when n finds none), up to K of them; no second model. A modifier of greedy decoding
and sampling: speculative.py verifies the drafts, so the tokens are those of the search
alone (greedy: the same tokens; sampling: the same distribution, each draft certain)."""
from __future__ import annotations

import torch


class PromptLookup:
    name = "lookup"

    def __init__(self, n: int, k: int):
        self.n, self.k = n, k

    def check(self, ids) -> None:
        """A prompt shorter than the n-gram is refused, naming the prompt and the fix: by its
        place among several; one alone is "the prompt" (a --prompts line's retry: the caller
        names it by its id and line, and its place in the retry says nothing)."""
        short = min(range(len(ids)), key=lambda i: len(ids[i]))
        if self.n > len(ids[short]):
            which = f"prompt {short}" if len(ids) > 1 else "the prompt"
            raise ValueError(f"'lookup n={self.n}' matches the last {self.n} tokens, but {which} "
                             f"has {len(ids[short])}; use n={len(ids[short])} or less, or a longer prompt")

    def structure(self) -> tuple:
        return ("lookup", self.n, self.k)

    def begin(self, target, rows, width, seq, pad, p_len):
        return None  # nothing to run ahead: the drafts come from the rows' own tokens

    def propose(self, frame, own, seq, length, new, sampling):
        """(drafts [R, K], None, how many are real [R]) from each row's history."""
        R, S = seq.shape
        src = torch.full((R,), -1, dtype=torch.long, device=seq.device)  # where the copy starts
        for size in range(self.n, 0, -1):  # the longest n-gram that matches wins
            tail = seq.gather(1, (length[:, None] - size + torch.arange(size, device=seq.device)).clamp(min=0))
            s = torch.arange(S - size + 1, device=seq.device)[None, :]
            hit = ((seq.unfold(1, size, 1) == tail[:, None, :]).all(-1) & (s >= frame.pad[:, None])
                   & (s + size < length[:, None]) & (length[:, None] - size >= frame.pad[:, None]))
            last = torch.where(hit, s, -1).amax(1)
            src = torch.where((src < 0) & (last >= 0), last + size, src)
        count = torch.where(src >= 0, (length - src).clamp(max=self.k), 0)
        j = torch.arange(self.k, device=seq.device)
        drafts = seq.gather(1, (src.clamp(min=0)[:, None] + j).clamp(max=S - 1))
        return torch.where(j[None, :] < count[:, None], drafts, 0), None, count


def wrap(strategy):
    class Lookup(strategy):
        proposes = PromptLookup.name  # speculative_run.refuse_stages, before any run

        def __init__(self, cfg):
            super().__init__(cfg)
            own = cfg.modifiers["lookup"]
            self.proposer = PromptLookup(int(own["n"]), int(own["k"]))

    return Lookup
