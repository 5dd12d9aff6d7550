"""Pieces several stages share: row statistics and token counts over the history."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from decode.compiler.context import StepContext

NEG_INF = float("-inf")


def from_keys(c: torch.Tensor) -> torch.Tensor:
    """The float32 value of each order key c in [0, 2**32): keys order like the values they
    stand for (non-negative floats at 2**31 + bits, negative ones below, reversed)."""
    i = torch.where(c >= 2**31, c - 2**31, -1 - c)
    return i.to(torch.int32).view(torch.float32)


NEG_INF_KEY = 2**31 - 1 - 0x7F800000  # the key of -inf; smaller keys are NaN patterns


def radix_max(x: torch.Tensor, enough) -> torch.Tensor:
    """[R, 1] float32: per row the largest float c with `enough(x >= c)` true.

    `enough` maps an [R, V] mask to [R, 1] bool and must be monotone (true for small c,
    false past some point). 32 passes over the row find c bit by bit in the order keys
    (see from_keys), exactly, in O(32 V) instead of a sort's O(V log V); each pass compares
    floats (keys below -inf's are NaN patterns, so they are read as -inf).
    """
    x = x.float()
    prefix = torch.zeros(x.shape[0], 1, dtype=torch.int64, device=x.device)
    for bit in range(31, -1, -1):
        cand = prefix | (1 << bit)
        prefix = torch.where(enough(x >= from_keys(cand.clamp(min=NEG_INF_KEY))), cand, prefix)
    return from_keys(prefix.clamp(min=NEG_INF_KEY))


def kth_largest(logits: torch.Tensor, k) -> torch.Tensor:
    """[R, 1]: the k-th largest value of each row (k a 0-d tensor or int, clamped to 1..V).

    A radix select rather than torch.topk(k): k stays a tensor, so changing it does not
    recompile, and it costs a tenth of a sort.
    """
    v = logits.shape[-1]
    k = torch.as_tensor(k, device=logits.device).clamp(1, v)
    # int32 counts: inductor's int64 sum of a mask runs at half the speed
    return radix_max(logits, lambda m: m.sum(-1, keepdim=True, dtype=torch.int32) >= k).to(logits.dtype)


def top_values(x: torch.Tensor, m: int, chunk: int = 32) -> torch.Tensor:
    """[R, m]: the m largest values of each row of `x` [R, V], largest first, as
    torch.topk(x, m).values gives them, for a quarter of its cost on a large vocabulary.

    They lie in the m chunks (of `chunk` entries) with the largest maxima: a value of the m
    largest in a chunk left out is at most the maxima of the m chunks taken, so those hold
    at least as many values as large. So the sort runs over m·chunk entries instead of V.
    """
    r, v = x.shape
    if v < 4 * m * chunk:  # too few chunks to gain anything
        return torch.topk(x, m).values
    x3 = F.pad(x, (0, -v % chunk), value=NEG_INF).view(r, -1, chunk)
    best = torch.topk(x3.amax(-1), m).indices
    return torch.topk(x3.gather(1, best[..., None].expand(-1, -1, chunk)).view(r, -1), m).values


def kth_largest_from(x: torch.Tensor, top: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[R, 1]: the k-th largest value of each row of `x` [R, V] (k [R, 1] long in 1..V),
    given `top` [R, M], the M largest values of each row, largest first: read off `top`
    when every row's k is within it, else `kth_largest` over the whole row (the same value).

    Eager, a plain branch; compiled on CPU, torch.cond runs the radix select only when some
    row needs it (it costs more than the rest of the stage); on a GPU a host-side branch
    would break the CUDA graph, so both run there.
    """
    m = top.shape[1]
    within = (k <= m).all()
    if not torch.compiler.is_compiling():
        return top.gather(1, k - 1) if bool(within) else kth_largest(x, k)
    if x.device.type != "cpu":
        return torch.where(k <= m, top.gather(1, k.clamp(max=m) - 1), kth_largest(x, k))
    return torch.cond(within, lambda x, top, k: top.gather(1, k.clamp(max=m) - 1),
                      lambda x, top, k: kth_largest(x, k), (x, top, k))


def unsort(sorted_mask: torch.Tensor, sorted_idx: torch.Tensor) -> torch.Tensor:
    """A mask over sorted positions back in vocabulary order."""
    return sorted_mask.scatter(1, sorted_idx, sorted_mask)


def token_counts(tokens: torch.Tensor, slots: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, V] float: how often each token of `tokens` [R, S] occurs where `slots` [R, S] holds."""
    tokens = torch.where(slots, tokens, 0)  # slots outside the mask may hold garbage
    counts = torch.zeros(tokens.shape[0], vocab, dtype=torch.float32, device=tokens.device)
    return counts.scatter_add(1, tokens, slots.to(torch.float32))


def eos_mask(ctx: StepContext, ids: torch.Tensor) -> torch.Tensor:
    """Bool, shaped like `ids`: which ids are end-of-sequence ids."""
    return (ids.unsqueeze(-1) == ctx.eos).any(-1)


def encode_all(texts, tokenizer) -> tuple[tuple[int, ...], ...]:
    """Each text as a token-id sequence (no BOS), duplicates dropped, order kept."""
    if isinstance(texts, str):
        texts = [texts]
    if tokenizer is None:
        raise ValueError("turning text into token ids needs the model's tokenizer")
    seqs = []
    for text in texts:
        ids = tuple(int(i) for i in tokenizer.encode(text, bos=False))
        if not ids:
            raise ValueError(f"{text!r} encodes to no tokens; give a non-empty text")
        seqs.append(ids)
    return tuple(dict.fromkeys(seqs))


def in_vocab(clause: str, ids, vocab: int) -> None:
    """A ValueError naming `clause` when one of its token `ids` is outside 0..vocab-1."""
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"'{clause}' names token id {bad[0]}, outside this model's vocabulary "
                         f"(ids 0..{vocab - 1}); give ids below {vocab} from this model's tokenizer")


def at_tokens(logits: torch.Tensor, ids) -> torch.Tensor:
    """[V] bool: which tokens of the vocabulary are among `ids` (ints, or a tensor of ids)."""
    vocab = torch.arange(logits.shape[-1], device=logits.device)
    return (vocab[:, None] == torch.as_tensor(ids, device=logits.device).reshape(1, -1)).any(-1)


def check_ids(seqs, vocab: int) -> None:
    bad = sorted({i for s in seqs for i in s if not 0 <= i < vocab})
    if bad or not seqs or not all(seqs):
        raise ValueError(f"token sequences must be non-empty with ids in 0..{vocab - 1}; got {seqs}")


def prefix_matches(ctx: StepContext, seqs: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """[R, Q] bool: row r's history ends with all but the last token of sequence q,
    so that the next token can complete it.

    As in transformers' SequenceBiasLogitsProcessor, a one-token sequence always matches
    and a longer one never matches a history that is not longer than its prefix.
    """
    rows = ctx.tokens.shape[0]
    dev = ctx.tokens.device
    m = max(len(s) for s in seqs) - 1
    lens = torch.tensor([len(s) - 1 for s in seqs], device=dev)           # [Q] prefix lengths
    if m == 0:
        return torch.ones(rows, len(seqs), dtype=torch.bool, device=dev)
    # prefixes right-aligned in an [Q, m] table; `used` marks their real slots
    prefix = torch.tensor([[0] * (m + 1 - len(s)) + list(s[:-1]) for s in seqs], device=dev)
    used = torch.arange(m, device=dev) >= m - lens[:, None]
    at = ctx.length - m + torch.arange(m, device=dev)                     # the last m slots
    at_ok = at >= 0
    at = at.clamp(min=0).expand(rows, m)
    tail = ctx.tokens.gather(1, at)
    tail_ok = ctx.valid.gather(1, at) & at_ok
    same = (tail[:, None, :] == prefix) & tail_ok[:, None, :]             # [R, Q, m]
    match = (same | ~used).all(-1)
    longer = ctx.valid.sum(-1, keepdim=True) > lens
    return match & (longer | (lens == 0))


def recent_counts(ctx: StepContext, slots: torch.Tensor, vocab: int, last) -> torch.Tensor:
    """[R, V] float: `token_counts` over `slots` among the last `last` slots of the history,
    the window of llama.cpp's penalty_last_n (`last` a 0-d tensor)."""
    at = torch.arange(ctx.tokens.shape[1], device=ctx.tokens.device)
    return token_counts(ctx.tokens, slots & (at >= ctx.length - last), vocab)
