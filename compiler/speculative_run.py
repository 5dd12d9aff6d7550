"""The speculative loop (speculative.py's rounds until every row is done), for `draft` and
`lookup`: the rows' buffers, the target's (and the proposer's) prefill, the round compiled
once per structure, and the results with each row's accepted drafts per round."""
from __future__ import annotations

import time

import torch

from decode.compiler import step_cache
from decode.compiler.logprobs import ROWS, begin as lp_begin
from decode.compiler.search.record import TOP, listed
from decode.compiler.speculative import Frame, iterate


def refuse(plan, search, ids, kernels) -> None:
    """What speculative decoding cannot run, as one message naming it and the fix."""
    refuse_stages(plan)
    search.proposer.check(ids)


def refuse_stages(plan) -> None:
    """The recipe's stages a speculative search cannot verify with (`decode check` and `run`
    both ask here): one ValueError naming the stage and the fix; nothing for other searches."""
    name = getattr(plan.search, "proposes", None)
    if name is None:
        return
    for stage, clause in zip(plan.stages, plan.recipe.stages):
        kernel = stage.kernel
        if hasattr(kernel, "init") or hasattr(kernel, "select"):
            raise ValueError(f"'{name}' verifies drafts with stateless logit stages only, and "
                             f"'{clause.canonical}' keeps state across tokens; drop one of them")
        if hasattr(kernel, "unconditional"):  # cfg: the verify forward has no unconditional rows
            raise ValueError(f"'{name}' verifies drafts on the rows alone, and '{clause.canonical}' "
                             "guides each row by unconditional rows beside it; drop one of them")


def run(model, search, kernels, sp, ids, keys, eos: tuple, pad_tok: int, max_new: int,
        s_len: int, compiled: bool, timings: dict | None = None, on_step=None, trace: bool = False,
        logprobs: int = 0, stops=None):
    """(the search's results per prompt, each row's [(proposed, accepted)] per round).

    `on_step(t, tokens, info)` sees the rows' t-th new tokens once every live row has one
    (after the round that made it), with `trace` the candidates as a step of plain decoding
    lists them (`record.listed`); `logprobs=N` gives the results their log-probs
    (speculative.note: both from the verify forward's scores). A row whose text holds one of
    `stops`' strings ends after the round that wrote it, its score the tokens' up to the string's."""
    proposer, n = search.proposer, search.rows
    cut = bool(stops is not None and stops.strings)
    k, R, p_len = proposer.k, len(ids) * n, max(map(len, ids))
    device = next(model.parameters()).device
    width = s_len + k + 1  # a round writes up to K slots past the last token `max` allows
    seq = torch.full((R, width), pad_tok, dtype=torch.long, device=device)
    pad = torch.empty(R, dtype=torch.long, device=device)
    for i, x in enumerate(ids):
        seq[i * n:(i + 1) * n, p_len - len(x):p_len] = torch.tensor(x)
        pad[i * n:(i + 1) * n] = p_len - len(x)
    t0 = time.perf_counter()
    with torch.inference_mode():
        cache = model.new_cache(R, width)
        if p_len > 1:  # the last prompt token is the first round's first position
            model.prefill(cache, seq[:, :p_len - 1], pad)
        own = proposer.begin(model, R, width, seq, pad, p_len)
        eos_t = torch.tensor(eos, dtype=torch.long, device=device)
        sampling = search.cfg.sampling
        keys = keys if keys is not None else torch.zeros(R, 2, dtype=torch.long, device=device)
        key = ("speculative", proposer.structure(), search.structure(), width,
               tuple((nm, kn, repr(st)) for nm, kn, st in kernels), compiled, trace, logprobs, cut)

        # the prompts' length and `max` are tensors: a step kept for this structure serves any
        def build(name):
            def one(cache, own, pad, keys, sp, seq, length, new, alive, score, book, lim):
                frame = Frame(pad, lim[0], eos_t, lim[1], keys, kernels, sp, model.config.vocab_size)
                return iterate(model, cache, own, proposer, frame, k, sampling, seq, length, new, alive,
                               score, book)
            return step_cache.compile_step(one, name, compiled, device.type == "cuda")

        step = step_cache.get(model, key, build)
        length = torch.full((R,), p_len, dtype=torch.long, device=device)
        new = torch.zeros(R, dtype=torch.long, device=device)
        alive = torch.ones(R, dtype=torch.bool, device=device)
        score = torch.zeros(R, device=device)
        book = _book(R, width, max_new + k + 1, model.config.vocab_size, trace, logprobs, device, cut)
        shown = Shown(on_step, trace, len(ids), eos_t, p_len)
        lim = torch.tensor([p_len, max_new], dtype=torch.long, device=device)
        t1, c1 = time.perf_counter(), time.thread_time()
        rounds, kept = [], [[] for _ in range(R)]  # kept: each row's new ids read so far (host)
        while max_new > 0:
            before = alive
            seq, length, new, alive, score, proposed, accepted, book = step(
                cache, own, pad, keys, sp, seq, length, new, alive, score, book, lim)
            rounds.append(torch.stack([before.long(), proposed, accepted]))
            if cut:  # as the plain loop: a row whose text holds a stop string goes no further
                alive = alive & ~torch.tensor(_stopped(stops, seq, new, p_len, kept), device=device)
            # one host sync a round: the rows' lengths decide the next (and what on_step sees)
            flags = torch.cat([alive.long(), new]).tolist() if on_step else [int(alive.any())]
            shown.upto(flags, seq, new, book)
            if not any(flags[:R]):
                break
        table = torch.stack(rounds, 2).tolist() if rounds else [[[]] * R] * 3
        if timings is not None:
            timings.update(prefill_s=t1 - t0, loop_s=time.perf_counter() - t1, loop_cpu_s=time.thread_time() - c1,
                           steps=int(new.max()),
                           rounds=len(rounds), proposed=sum(map(sum, table[1])), accepted=sum(map(sum, table[2])))
        if cut:  # the score of the tokens up to the stop string's end, not the round's last
            ends = [stops.cut(r) for r in _new_ids(seq, new, p_len)]
            score = torch.stack([book["mine"][r, p_len:p_len + c].sum() if c else score[r] for r, c in enumerate(ends)])
        final = {"score": score, **({ROWS: book["paths"][:, :p_len + max_new]} if logprobs else {})}
        results = search.finalize(final, seq[:, :p_len + max_new],
                                  {"prompt": p_len, "max_new": max_new, "steps": max_new})
    per_row = [[(p, a) for live, p, a in zip(table[0][r], table[1][r], table[2][r]) if live]
               for r in range(R)]
    return results, per_row


def _new_ids(seq, new, p_len: int) -> list[list[int]]:
    return [row[p_len:p_len + n] for row, n in zip(seq.tolist(), new.tolist())]


def _stopped(stops, seq, new, p_len: int, kept: list[list[int]]) -> list[bool]:
    """Which rows' new text holds a stop string. `kept` (each row's new ids read in earlier
    rounds) gains the round's: only the slots past them are read from the device, not the
    whole sequence again."""
    counts = new.tolist()
    gain = max(c - len(h) for c, h in zip(counts, kept))
    if gain > 0:
        start = torch.tensor([p_len + len(h) for h in kept], device=seq.device)
        at = (start[:, None] + torch.arange(gain, device=seq.device)).clamp(max=seq.shape[1] - 1)
        for h, c, block in zip(kept, counts, seq.gather(1, at).tolist()):
            h.extend(block[:c - len(h)])
    return [stops.hit(h) for h in kept]


def _book(rows: int, width: int, tokens: int, vocab: int, trace: bool, logprobs: int, device,
          cut: bool = False) -> dict:
    """The buffers a round notes its kept tokens in (speculative.note), empty when none is asked;
    with stop strings, `mine` [R, S]: each kept token's processed log-prob, by slot."""
    book = {"paths": lp_begin(logprobs, rows, width, device)} if logprobs else {}
    if cut:
        book["mine"] = torch.zeros(rows, width, device=device)
    if trace:
        top = min(TOP, vocab)
        book.update(top=torch.zeros(rows, tokens, top, device=device),
                    ids=torch.zeros(rows, tokens, top, dtype=torch.long, device=device),
                    own=torch.zeros(rows, tokens, device=device))
    return book


class Shown:
    """Hands `on_step` each new-token index once every live row has its token."""

    def __init__(self, on_step, trace: bool, batch: int, eos, p_len: int):
        self.on_step, self.trace, self.batch, self.eos, self.p_len, self.done = on_step, trace, batch, eos, p_len, 0

    def upto(self, flags: list[int], seq, new, book) -> None:
        if self.on_step is None:
            return
        R = len(flags) // 2
        alive, have = flags[:R], flags[R:]
        ready = min([h for a, h in zip(alive, have) if a] or [max(have)])
        rows = torch.arange(R, device=seq.device)
        for t in range(self.done, ready):
            tokens = seq[:, self.p_len + t]
            info = {}
            if self.trace:
                live = t < new
                info = listed(book["top"][:, t], book["ids"][:, t], book["own"][:, t], tokens, rows, live,
                              (tokens[:, None] == self.eos).any(-1) & live, self.batch)
                info["from"] = rows
            self.on_step(t, tokens, info)
        self.done = max(self.done, ready)
