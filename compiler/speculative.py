"""Speculative decoding: a proposer drafts K tokens per row, the target checks them in one
forward over K+1 positions (`Llama.verify`), and each row keeps what the target agrees with.

    greedy     a draft is kept while it is the target's argmax; the first disagreement is
               replaced by the target's argmax, so the tokens are plain greedy's
    sampling   Leviathan et al. 2023 / Chen et al. 2023: draft token d (drawn from q) is kept
               with probability min(1, p(d) / q(d)); at the first rejection the row draws from
               max(0, p - q), normalised; when all are kept, from p at the next position
               (`accept`). p and q are the target's and the draft's distributions after all
               the recipe's logit stages, so the output distribution is plain sampling's.

A row at length L holds L tokens, the last not yet run by the target. One iteration runs
[x_{L-1}, d_1 .. d_K] at slots L-1 .. L+K-1, keeps n drafts and one token of the target's,
and moves to L + n + 1: rejected slots are never read again (the next call overwrites them).
Rows move at their own pace; the stages see each row's own history and length.

The uniforms are the rows' counter-based draws (noise.py) of the *position* a token fills:
a position's draws are read by one decision only, since the iteration after a rejection
starts at the next position; so a seed repeats a run, compiled or not.
"""
from __future__ import annotations

import torch

from decode.compiler.context import StepContext
from decode.compiler.logprobs import top_n
from decode.compiler.noise import uniform
from decode.compiler.search.draw import draw

DRAFT, ACCEPT, REST = 0, 1, 2  # the columns of a position's uniforms each decision reads


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """What a row draws from after rejecting a draft: max(0, p - q) (normalised by `draw`)."""
    return (p - q).clamp(min=0.0)


class Frame:
    """Everything fixed for one run: the rows' padding, the prompt end, EOS ids, `max`, keys."""

    def __init__(self, pad, p_len, eos, max_new, keys, chain, sp, vocab: int):
        """p_len and max_new are 0-d tensors, so that one compiled round serves every run."""
        self.pad, self.p_len, self.eos, self.keys, self.chain, self.sp = pad, p_len, eos, keys, chain, sp
        self.max_new = max_new
        self.vocab = vocab

    def context(self, seq, length, new) -> StepContext:
        """What a stage reads for the token at slot `length` [R] (row r's `new[r]`-th)."""
        slots = torch.arange(seq.shape[1], device=seq.device)
        end = length[:, None]
        return StepContext(tokens=seq, valid=(slots >= self.pad[:, None]) & (slots < end),
                           generated=(slots >= self.p_len) & (slots < end), length=end,
                           new_len=new[:, None], eos=self.eos, max_new=self.max_new, keys=self.keys)

    def process(self, x, seq, length, new):
        """The recipe's logit stages, in written order, on scores x [R, V] of slot `length`."""
        if not self.chain:
            return x
        ctx = self.context(seq, length, new)
        for (_, kernel, static), dyn in zip(self.chain, self.sp):
            x = kernel.apply(x, ctx, **static, **dyn)
        return x

    def noise(self, new):
        """[R, 3] the uniforms of each row's `new[r]`-th token (DRAFT, ACCEPT, REST)."""
        return uniform(self.keys, new[:, None], self.vocab)[:, :3]

    def is_eos(self, tokens):
        return (tokens[..., None] == self.eos).any(-1)


def accept(x, drafts, logq, count, u, sampling: bool):
    """(drafts kept [R], the target's token after them [R]) from the target's processed
    scores x [R, K+1, V], drafts [R, K] (the first count[r] real), the draft's processed
    log-probs logq [R, K, V] (None: each draft was certain, as a lookup's), uniforms u [R, K+1, 3]."""
    R, K = drafts.shape
    real = torch.arange(K, device=drafts.device)[None, :] < count[:, None]
    if not sampling:
        best = torch.argmax(x, dim=-1)
        n = torch.cumprod(((drafts == best[:, :K]) & real).long(), 1).sum(1)
        return n, best.gather(1, n[:, None])[:, 0]
    p = torch.softmax(x, dim=-1)
    q = (torch.nn.functional.one_hot(drafts, x.shape[-1]).to(p.dtype) if logq is None
         else torch.softmax(logq, dim=-1))
    pd, qd = (t.gather(2, drafts[..., None])[..., 0] for t in (p[:, :K], q))
    ok = (u[:, :K, ACCEPT] * qd <= pd) & real
    n = torch.cumprod(ok.long(), 1).sum(1)
    at = n[:, None, None].expand(R, 1, x.shape[-1])
    pn = p.gather(1, at)[:, 0]
    qn = torch.cat([q, torch.zeros_like(q[:, :1])], 1).gather(1, at)[:, 0]
    rest = residual(pn, qn)
    rejected = (n < count) & (rest.sum(-1) > 0)  # p == q up to rounding: nothing to reject
    w = torch.where(rejected[:, None], rest, pn)
    un = u.gather(1, n[:, None, None].expand(R, 1, 3))[:, 0, REST:REST + 1]
    return n, draw(torch.log(w), un)[:, 0]


def iterate(target, cache, own, proposer, frame: Frame, k: int, sampling: bool,
            seq, length, new, alive, score, book: dict):
    """One draft-and-verify round for every row (`own`: the proposer's state, a draft's cache): the new (seq, length, new, alive, score),
    each row's (drafts proposed, drafts accepted) [R] and `book` with the round's kept tokens
    noted (`note`); rows that had ended propose nothing."""
    drafts, logq, count = proposer.propose(frame, own, seq, length, new, sampling)
    j = torch.arange(k + 1, device=seq.device)
    ahead = seq.scatter(1, length[:, None] + j[None, :k], drafts)
    last = seq.gather(1, (length - 1)[:, None])
    logits = target.verify(cache, torch.cat([last, drafts], 1), length - 1, frame.pad)
    x = torch.stack([frame.process(logits[:, i], ahead, length + i, new + i) for i in range(k + 1)], 1)
    u = torch.stack([frame.noise(new + i) for i in range(k + 1)], 1) if sampling else None
    n, nxt = accept(x, drafts, logq, count, u, sampling)
    toks = torch.where(j[None, :] < n[:, None], torch.cat([drafts, nxt[:, None]], 1), nxt[:, None])
    keep = (j[None, :] <= n[:, None]) & (j[None, :] < (frame.max_new - new)[:, None]) & alive[:, None]
    ends = frame.is_eos(toks) & keep
    keep = keep & ((ends.long().cumsum(1) - ends.long()) == 0)  # nothing after a row's EOS
    took = keep.sum(1)
    slots = length[:, None] + j[None, :]
    seq = put(seq, slots, toks, keep)
    proc = torch.log_softmax(x, dim=-1)
    score = score + torch.where(keep, proc.gather(2, toks[..., None])[..., 0], 0.0).sum(1)
    book = note(book, logits, proc, toks, keep, slots, new[:, None] + j[None, :])
    proposed = torch.where(alive, count, 0)
    accepted = torch.minimum(n, took)
    alive = alive & ~ends.any(1) & (new + took < frame.max_new)
    return seq, length + took, new + took, alive, score, proposed, accepted, book


def put(buf, at, val, keep):
    """buf [R, S, ...] with val [R, J, ...] written at indices at [R, J] where keep [R, J]."""
    tail = (1,) * (buf.dim() - 2)
    idx = at.reshape(*at.shape, *tail).expand(*at.shape, *buf.shape[2:])
    return buf.scatter(1, idx, torch.where(keep.reshape(*keep.shape, *tail), val, buf.gather(1, idx)))


def note(book: dict, logits, proc, toks, keep, slots, index) -> dict:
    """What a round records of its kept tokens, from the verify forward's own tensors (no
    second forward): `paths` [R, S, F], the rows' log-probs by slot (logprobs.py), and for a
    trace `top`, `ids` [R, N, TOP] and `own` [R, N], each new token's best processed
    log-probs, their ids and its own, by its index among the row's new tokens; with stop
    strings `mine` [R, S], each kept token's processed log-prob by slot."""
    out = {}
    chosen = (lambda t: t.gather(2, toks[..., None]))  # [R, K+1, 1]
    if "paths" in book:
        n = top_n(book["paths"])
        raw = torch.log_softmax(logits, dim=-1)
        rv, ri = torch.topk(raw, n, dim=-1)
        pv, pi = torch.topk(proc, n, dim=-1)
        entry = torch.cat([chosen(raw), chosen(proc), ri.float(), rv, pi.float(), pv], -1)
        out["paths"] = put(book["paths"], slots, entry, keep)
    if "mine" in book:
        out["mine"] = put(book["mine"], slots, chosen(proc)[..., 0], keep)
    if "top" in book:
        tv, ti = torch.topk(proc, book["top"].shape[-1], dim=-1)
        out.update(top=put(book["top"], index, tv, keep), ids=put(book["ids"], index, ti, keep),
                   own=put(book["own"], index, chosen(proc)[..., 0], keep))
    return out
