"""Continuous batching: in a job of many prompts, a row whose prompt finished takes the next
waiting one, so the batch stays full and the step keeps its shapes (one compiled step).

    for i, out in refill.run(plan, model, prompts, seeds, size=8):
        ...  # out: prompt i's Completion (or the error that prompt alone raised), as it finishes

Every row writes its next token at the same slot (`prompt + t`, as in engine.run). A prompt
that joins at step b is prefilled alone and put in its row so that it ends just before that
slot; `lim["begin"][row] = b` gives the stages its own count of new tokens (t - b) and its
generated slots, and the draws their step (noise at t - b): a prompt gets the tokens it gets
decoded alone. When the slots run short, all rows move left together (the KV cache, the
token slots, the padding and the step counters; positions are slot - pad, so none changes).

Which recipes (`fits`): a search whose rows are independent and keep no state (`refills`:
greedy, sample n), stages without state (a stage's state would have to move with the
slots), no cfg, look-ahead, early exits, hidden states, drafts or constraints. Others run
batch by batch (jobs/batch.py).
"""
from __future__ import annotations

from collections import deque
from typing import Iterator

import torch

from decode.compiler import guidance
from decode.compiler.engine import SEQ_BUCKET, _bind_stages, _encode, _get_step, _stamped, eos_ids, pad_id
from decode.compiler.logprobs import ROWS, begin as lp_begin, meaning
from decode.compiler.noise import row_keys
from decode.compiler.plugins import checked_step
from decode.compiler.provenance import seeding
from decode.compiler.results import check_health, completions
from decode.compiler.search.base import SearchConfig
from decode.compiler.stages import stateful
from decode.compiler.stops import StopStrings
from decode.runtime.cache import KVCache
from decode.runtime.errors import ModelError, check_fits

EVERY = 1  # steps between host checks (who finished, who joins): a finished row idles until one


def _search(plan, model, size: int, logprobs: int):
    eos = eos_ids(model)
    cfg = SearchConfig(batch=size, params=plan.search_params, modifiers=plan.modifiers, sampling=plan.sampling,
                       eos=eos, pad=pad_id(model, eos), logprobs=logprobs, tokenizer=model.tokenizer,
                       vocab=model.config.vocab_size, max_new=plan.max_new)
    return plan.search(cfg)


def fits(plan, model, size: int = 1, logprobs: int = 0) -> bool:
    """Whether a job of `plan` on `model` can run with continuous batching (see the module)."""
    search = _search(plan, model, size, logprobs)
    return (search.refills and not search.ahead and not search.hidden and getattr(search, "proposer", None) is None
            and not search.exits(model.config) and not search.init(torch.device("cpu"), 1)
            and not any(stateful(st.kernel) for st in plan.stages) and guidance.guiding(plan) is None
            and isinstance(model.new_cache(1, 1), KVCache))


def run(plan, model, prompts: list, seeds: list[int], size: int, compiled: bool = True, seed: int = 0,
        logprobs: int = 0) -> Iterator[tuple[int, object]]:
    """(index, Completion or the exception that prompt raised) for each of `prompts`, as they
    finish; `size` prompts run at a time; prompt i draws with `seeds[i]` (run seed `seed`)."""
    device = next(model.parameters()).device
    max_new, waiting = plan.max_new, deque()
    for i, p in enumerate(prompts):
        try:
            texts, ids = _encode(model, [p])
            check_fits(len(ids[0]), max_new, model.config)
            waiting.append((i, texts[0], ids[0]))
        except (ModelError, ValueError) as err:
            yield i, err
    if not waiting:
        return
    size = min(size, len(waiting))
    search = _search(plan, model, size, logprobs)
    k, eos = search.rows, eos_ids(model)
    pad_tok, rows = pad_id(model, eos), size * k
    bound = _bind_stages(plan, model, search, device)
    chain, sp = [(n, mod, st) for n, mod, st, _ in bound], [dyn for *_, dyn in bound]
    hp = {kk: torch.tensor(v, device=device, dtype=torch.float32) for kk, v in search.hyper().items()}
    P = max(len(x) for *_, x in waiting)  # every prompt fits before slot P
    s_len = -(-(P + 2 * max_new + EVERY) // SEQ_BUCKET) * SEQ_BUCKET  # room to join, before a shift
    step = _get_step(model, search, chain, compiled, s_len, False)
    if compiled:  # plugin code runs one eager step first, so that its errors read plainly
        step = checked_step(step, lambda: _get_step(model, search, chain, False, s_len, False),
                            [search, *(kernel for _, kernel, _ in chain)])
    stops, lp_meaning = StopStrings(plan.stop, model.tokenizer), logprobs and meaning(search, logprobs)
    _, all_seeds = seeding(plan, seed, list(seeds), len(seeds))
    with torch.inference_mode():
        cache = model.new_cache(rows, s_len)
        seq = torch.full((rows, s_len), pad_tok, dtype=torch.long, device=device)
        pad = torch.full((rows,), P, dtype=torch.long, device=device)
        begin = torch.zeros(rows, dtype=torch.long, device=device)
        keys = torch.zeros(rows, 2, dtype=torch.long, device=device) if all_seeds is not None else None
        lim = {"prompt": torch.tensor(P, device=device), "max_new": torch.tensor(max_new, device=device),
               "begin": begin}
        state = search.begin(device, s_len)
        state["alive"].zero_()
        logits = torch.zeros(rows, model.config.vocab_size, device=device)
        health = torch.tensor([-1, 0, 0], dtype=torch.long, device=device)
        paths = lp_begin(logprobs, rows, s_len, device)
        sst = [{} for _ in chain]  # the stages keep no state (`fits`)
        t, held = 0, [None] * size  # held[g]: (index, text, ids, step it joined) of row group g's prompt
        while True:
            if t % EVERY == 0:  # one host sync: who finished, who joins
                check_health(health.tolist(), plan, model, k)
                alive = state["alive"].view(size, k).any(1).tolist()
                for g, h in enumerate(held):
                    if h is not None and not alive[g]:
                        held[g] = None
                        yield h[0], _finished(h, g, k, t, P, max_new, seq, state, paths, search, plan, model,
                                              stops, lp_meaning, compiled, seed, all_seeds)
                free = [g for g, h in enumerate(held) if h is None]
                if not waiting and len(free) == size:
                    return
                short = P + t + max(max_new if waiting and free else 0, EVERY) > s_len
                d = min([t] + [int(pad[g * k]) for g, h in enumerate(held) if h is not None]) if short else 0
                if d > 0:  # move left, as far as the oldest running row allows
                    cache.shift(d)
                    seq = torch.cat([seq[:, d:], seq.new_full((rows, d), pad_tok)], 1)
                    paths = None if paths is None else torch.cat([paths[:, d:], torch.zeros_like(paths[:, :d])], 1)
                    pad -= d
                    begin -= d
                    t -= d
                    held = [h and (*h[:3], h[3] - d) for h in held]
                room = P + t + max_new <= s_len  # a joining prompt has room for its `max` (after a move, always)
                joining = [(g, waiting.popleft()) for g in free[:len(waiting)]] if room else []
                if joining:
                    logits = _join(model, cache, joining, k, P + t, t, seq, pad, begin, keys, state, logits,
                                   all_seeds, pad_tok, device)
                    for g, h in joining:
                        held[g] = (*h, t)
            tt = torch.tensor(t, device=device)
            logits, seq, state, sst, tokens, info, health, paths = step(cache, tt, logits, keys, seq, pad, lim, hp,
                                                                        sp, state, sst, health, paths)
            t += 1
            state["alive"] = state["alive"] & (t - begin < max_new)  # a row ends at its own `max`
            if stops.strings:  # each step, so a row ends there
                hit = [h is not None and stops.hit(seq[g * k + j, P + h[3]:P + t].tolist())
                       for g, h in enumerate(held) for j in range(k)]
                state = search.stop_rows(state, torch.tensor(hit, device=device))


def _join(model, cache, joining, k, slot, t, seq, pad, begin, keys, state, logits, all_seeds, pad_tok, device):
    """Prefill the joining prompts alone and put them in their rows, ending before `slot`;
    their rows' counters start at step t. Returns the logits with theirs in their rows."""
    rows = torch.tensor([g * k + j for g, _ in joining for j in range(k)], device=device)
    width = max(len(h[2]) for _, h in joining)
    tok = torch.full((len(rows), width), pad_tok, dtype=torch.long, device=device)
    own = torch.tensor([width - len(h[2]) for _, h in joining for _ in range(k)], device=device)
    for n, (_, h) in enumerate(joining):
        tok[n * k:(n + 1) * k, width - len(h[2]):] = torch.tensor(h[2], device=device)
    scratch = model.new_cache(len(rows), width)
    first = model.prefill(scratch, tok, own)
    cache.put(rows, scratch, slot - width)
    seq[rows] = pad_tok
    seq[rows, slot - width:slot] = tok
    pad[rows] = own + (slot - width)
    begin[rows] = t
    if keys is not None:
        keys[rows] = row_keys([all_seeds[h[0]] for _, h in joining], k, device)
    state["alive"][rows] = True
    state["score"][rows] = 0.0
    return logits.index_copy(0, rows, first.to(logits.dtype))


def _finished(h, g, k, t, P, max_new, seq, state, paths, search, plan, model, stops, lp_meaning, compiled, seed,
              all_seeds):
    """Row group g's prompt `h` as a Completion (or the error its result raised)."""
    i, text, ids, b = h
    lo, hi, rows = P + b, P + b + min(t - b, max_new), slice(g * k, (g + 1) * k)
    own = {"own": {}, "alive": state["alive"][rows], "score": state["score"][rows]}
    if paths is not None:
        own[ROWS] = paths[rows, lo:hi]
    try:
        results = search.finalize(own, seq[rows, lo:hi], {"prompt": 0, "max_new": max_new, "steps": hi - lo})
        outs = completions(results, plan.recipe, model, [text], [ids], stops, lp_meaning)
    except (ModelError, ValueError) as err:
        return err
    return _stamped(outs, model, compiled, None if all_seeds is None else seed,
                    None if all_seeds is None else [all_seeds[i]])[0]
