"""The speculative loop (speculative.py's rounds until every row is done), for `draft` and
`lookup`: the rows' buffers, the target's (and the proposer's) prefill, the round compiled
once per structure, and the results with each row's accepted drafts per round."""
from __future__ import annotations

import torch

from decode.compiler import step_cache
from decode.compiler.speculative import Frame, iterate


def refuse(plan, search, ids, kernels, trace: bool = False, logprobs: int = 0) -> None:
    """What speculative decoding cannot run, as one message naming it and the fix."""
    name = search.proposer.name
    if trace or logprobs:
        asked = "a trace (--trace)" if trace else "per-token log-probs (--logprobs)"
        raise ValueError(f"'{name}' does not give {asked} yet: its rounds keep several tokens per "
                         f"forward; run without it, or drop '{name}' (greedy gives the same tokens)")
    for (stage, kernel, _), clause in zip(kernels, plan.recipe.stages):
        if hasattr(kernel, "init") or hasattr(kernel, "select"):
            raise ValueError(f"'{name}' verifies drafts with stateless logit stages only, and "
                             f"'{clause.canonical}' keeps state across tokens; drop one of them")
    search.proposer.check(ids)


def run(model, search, kernels, sp, ids, keys, eos: tuple, pad_tok: int, max_new: int,
        s_len: int, compiled: bool, timings: dict | None = None):
    """(the search's results per prompt, each row's [(proposed, accepted)] per round)."""
    import time

    proposer, n = search.proposer, search.rows
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
               tuple((nm, kn, repr(st)) for nm, kn, st in kernels), compiled)

        def build(name):
            def one(cache, own, pad, keys, sp, seq, length, new, alive, score):
                frame = Frame(pad, p_len, eos_t, max_new, keys, kernels, sp, model.config.vocab_size)
                return iterate(model, cache, own, proposer, frame, k, sampling, seq, length, new, alive, score)
            return step_cache.compile_step(one, name, compiled, device.type == "cuda")

        step = step_cache.get(model, key, build)
        length = torch.full((R,), p_len, dtype=torch.long, device=device)
        new = torch.zeros(R, dtype=torch.long, device=device)
        alive = torch.ones(R, dtype=torch.bool, device=device)
        score = torch.zeros(R, device=device)
        t1 = time.perf_counter()
        rounds = []
        while max_new > 0:
            before = alive
            seq, length, new, alive, score, proposed, accepted = step(cache, own, pad, keys, sp, seq, length,
                                                                      new, alive, score)
            rounds.append(torch.stack([before.long(), proposed, accepted]))
            if not bool(alive.any()):  # one host sync a round: the rows' lengths decide the next
                break
        if timings is not None:
            timings.update(prefill_s=t1 - t0, loop_s=time.perf_counter() - t1, steps=len(rounds))
        results = search.finalize({"score": score}, seq[:, :p_len + max_new],
                                  {"prompt": p_len, "max_new": max_new, "steps": max_new})
    table = torch.stack(rounds, 2).tolist() if rounds else [[[]] * R] * 3
    per_row = [[(p, a) for live, p, a in zip(table[0][r], table[1][r], table[2][r]) if live]
               for r in range(R)]
    return results, per_row
