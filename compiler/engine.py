"""The engine: prefill -> step* -> finalize, for a batch of prompts.

It binds a plan to a model (the search, the stages' numbers as tensors, the rows of each
prompt), runs `step.prefill`, then steps (the selection compiled once per recipe structure,
the model's forward once per model and shape, forward.py; kept by the model, step_cache.py)
until every row is done or `max` is reached, and turns the results into Completions.
"""
from __future__ import annotations

import time

import torch

from decode.compiler import constraint, forward, guidance, speculative_run, step_cache
from decode.compiler.arguments import check_model, logprobs_value, prompt_list, recipe_plan, seed_value
from decode.compiler.logprobs import ROWS, begin as lp_begin, meaning
from decode.compiler.noise import row_keys
from decode.compiler.plan import Plan
from decode.compiler.plugins import checked_step
from decode.compiler.provenance import seeding, stamp
from decode.compiler.results import Completion, Sequence, check_health, completions  # noqa: F401  (re-exported)
from decode.compiler.search.base import SearchConfig
from decode.compiler.search.pool import BeamPool
from decode.compiler.stages import bind, stateful
from decode.compiler.step import context, decode_step, has_hidden, prefill, select_step
from decode.compiler.stops import StopStrings
from decode.dsl import lookup
from decode.runtime.errors import ModelError, check_fits, require_tokenizer
from decode.runtime.memory import check_decode

CHECK_EVERY = 8        # host syncs on "all finished" once every this many steps
SEQ_BUCKET = 32        # cache length rounds up to this, so prompt lengths share graphs
SHARED_FORWARD = True  # False: the forward in each step's graph (benchmarks/shared_forward_ab.py compares)


# ----------------------------------------------------------------------------- binding

def eos_ids(model) -> tuple[int, ...]:
    """The model's end-of-sequence ids (its config may give one, a list or None)."""
    eos = model.config.eos_ids
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None)


def pad_id(model, eos) -> int:
    """The token a row writes once it stopped: the config's pad id, else the first EOS id, else 0."""
    pad = model.config.pad_id
    return int(pad) if pad is not None else (eos[0] if eos else 0)


def _encode(model, prompts) -> tuple[list[str | None], list[list[int]]]:
    texts, ids = [], []
    for p in prompt_list(prompts):
        if isinstance(p, str):
            texts.append(p)
            ids.append(list(require_tokenizer(model).encode(p)))
        else:
            texts.append(None)
            ids.append(p)
    vocab = model.config.vocab_size
    for n, i in enumerate(ids):
        if not i:
            raise ValueError(f"prompt {n} is empty: give at least one token")
        bad = [x for x in i if not 0 <= x < vocab]
        if bad:
            raise ModelError(f"prompt {n} has token id {bad[0]}, outside this model's vocabulary "
                             f"(ids 0..{vocab - 1}); check that the ids come from this model's tokenizer")
    return texts, ids


def _bind_stages(plan: Plan, model, search, device):
    """[(name, kernel, static params, tensor params)] for the plan's stages, in order."""
    bound = []
    for st in plan.stages:
        params = search.stage_params(lookup(st.name), dict(st.params))
        static, tensors = bind(st.kernel, params, getattr(model, "tokenizer", None), device,
                               model.config.vocab_size)
        bound.append((st.name, st.kernel, static, tensors))
    return bound


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _get_step(model, search, chain, compiled: bool, s_len: int, trace: bool):
    """This structure's step, once per model (step_cache.py): selection + shared forward.py, or one graph."""
    alone = forward.shared(search) and SHARED_FORWARD
    key = (s_len, search.structure(), tuple((n, kernel, _freeze(st)) for n, kernel, st in chain),
           compiled, trace, alone)  # everything the graph depends on but tensor values
    part, what, opts = ((select_step, forward.SELECTION, forward.SELECTION_OPTIONS) if alone
                        else (decode_step, step_cache.STEP, None))

    def build(name: str):
        def step(*args):
            return part(model, search, chain, trace, *args)
        return step_cache.compile_step(step, name, compiled, next(model.parameters()).is_cuda, what, opts)

    step = step_cache.get(model, key, build)
    return forward.joined(step, model, search, s_len, compiled) if alone else step


# ----------------------------------------------------------------------------- the loop


def run(plan: Plan, model, prompts, seed: int | None = None, compiled: bool = True,
        on_step=None, trace: bool = False, seeds: list[int] | None = None,
        timings: dict | None = None, logprobs: int = 0) -> list[Completion]:
    """Decode `prompts` with a compiled plan.

    Sampling is seeded per prompt (`provenance.seeding`): `seeds` gives each prompt's seed;
    each Completion records them and what ran (`provenance.stamp`).
    `timings`, if given, receives prefill_s, loop_s (the step loop) and steps.

    `on_step(t, tokens, info)` sees each step's chosen tokens [R] and, with `trace=True`,
    the candidates the search considered (see `search.record.candidates`). `logprobs=N`
    gives every returned token its log-probs and N alternatives (logprobs.py).
    """
    check_model(model)
    seed = seed_value(seed)
    seeds = None if seeds is None else [seed_value(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    eos = eos_ids(model)
    pad_tok = pad_id(model, eos)
    texts, ids = _encode(model, prompts)
    logprobs = logprobs_value(logprobs, model.config.vocab_size)
    b = len(ids)
    device = next(model.parameters()).device
    cfg = SearchConfig(batch=b, params=plan.search_params, modifiers=plan.modifiers,
                       sampling=plan.sampling, eos=eos, pad=pad_tok, logprobs=logprobs,
                       prompts=tuple(map(tuple, ids)), tokenizer=model.tokenizer,
                       vocab=model.config.vocab_size, max_new=plan.max_new)
    search = plan.search(cfg)
    exits = search.exits(model.config)  # a search that reads early exits refuses a model without them
    if search.hidden and not has_hidden(model):
        raise ModelError(f"'{search.hidden}' reads the rows' hidden states, which this model "
                         f"({type(model).__name__}) does not give; use a llama checkpoint or another method")
    k = search.rows
    bound = _bind_stages(plan, model, search, device)
    kernels = [(n, mod, st) for n, mod, st, _ in bound]
    sp = [dyn for *_, dyn in bound]
    hp = {kk: torch.tensor(v, device=device, dtype=torch.float32) for kk, v in search.hyper().items()}

    p_len = max(len(x) for x in ids)
    max_new = plan.max_new
    check_fits(p_len, max_new, model.config)
    uncond = guidance.prompts(plan, model, ids)  # each prompt's unconditional row (cfg), or None
    p_len = max([p_len, *map(len, uncond or [])])
    s_len = -(-(p_len + max_new) // SEQ_BUCKET) * SEQ_BUCKET
    s_len = min(s_len, max(model.config.max_seq_len, p_len + max_new))
    ahead = f", the candidates a row looks ahead at (now {search.ahead})" if search.ahead else ""
    rows = b * k * (2 if uncond else 1)  # cfg decodes an unconditional row beside each row
    check_decode(model, rows, s_len + search.ahead, p_len, fix=f"Lower the beam/sample width "
                 f"(now {k}){ahead}, the prompts decoded together (now {b}) or `max` (now {max_new}).",
                 ahead=search.ahead)

    seed, seeds = seeding(plan, seed, seeds, b)
    keys = row_keys(seeds, k, device) if seeds is not None else None
    stops = StopStrings(plan.stop, model.tokenizer)
    if getattr(search, "proposer", None) is not None:  # draft / lookup: speculative_run.py's loop
        speculative_run.refuse(plan, search, ids, kernels)
        results, rounds = speculative_run.run(model, search, kernels, sp, ids, keys, eos, pad_tok, max_new,
                                              s_len, compiled, timings, on_step, trace, logprobs, stops)
        return _stamped(completions(results, plan.recipe, model, texts, ids, stops,
                                    logprobs and meaning(search, logprobs)), model, compiled, seed, seeds, rounds, k,
                        getattr(search.proposer, "model", None))
    step = _get_step(model, search, kernels, compiled, s_len, trace)
    if compiled:  # plugin code runs one eager step first, so that its errors read plainly
        step = checked_step(step, lambda: _get_step(model, search, kernels, False, s_len, trace),
                            [search, *(kernel for _, kernel, _ in kernels)])
    hosts = constraint.hosts(plan, model, b * k, eos)  # each constraint's matchers, per row
    with torch.inference_mode():
        # rows: each prompt repeated for its k beams / samples, left-padded to a common length
        seq = torch.full((b * k, s_len), pad_tok, dtype=torch.long, device=device)
        pad = torch.empty(b * k, dtype=torch.long, device=device)
        for i, x in enumerate(ids):
            for j in range(k):
                seq[i * k + j, p_len - len(x):p_len] = torch.tensor(x)
                pad[i * k + j] = p_len - len(x)
        lim = {"prompt": torch.tensor(p_len, device=device), "max_new": torch.tensor(max_new, device=device)}
        t_start = time.perf_counter()
        seq_all, pad_all = guidance.stack(seq, pad, uncond, k, p_len)  # the rows [+ unconditional rows]
        cache = model.new_cache(seq_all.shape[0], s_len + search.ahead)  # + the look-ahead's scratch slots
        if compiled and device.type == "cuda" and isinstance(cache, torch.nn.Module):
            for buf in cache.buffers():  # written in place by the step: CUDA graphs need fixed addresses
                torch._dynamo.mark_static_address(buf)
        state = search.begin(device, s_len)
        logits, state = prefill(model, cache, seq_all, pad_all, p_len, search, state, exits, keys, hp)
        if timings is not None and device.type == "cuda":
            torch.cuda.synchronize()
        t_prefill, c_prefill = time.perf_counter(), time.thread_time()
        start = context(seq, pad, lim["prompt"], torch.zeros((), dtype=torch.long, device=device),
                        torch.tensor(eos, dtype=torch.long, device=device), max_new=lim["max_new"])
        sst = [kernel.init(start, model.config.vocab_size, **static, **dyn) if stateful(kernel) else {}
               for (_, kernel, static), dyn in zip(kernels, sp)]
        sst = constraint.masks(hosts, sst)
        t = torch.zeros((), dtype=torch.long, device=device)
        health = torch.tensor([-1, 0, 0], dtype=torch.long, device=device)
        paths = lp_begin(logprobs, b * k, s_len, device)
        steps = 0
        for steps in range(1, max_new + 1):
            logits, seq, state, sst, tokens, info, health, paths = step(cache, t, logits, keys, seq, pad_all, lim,
                                                                        hp, sp, state, sst, health, paths)
            t = t + 1
            sst = constraint.masks(hosts, sst, seq, p_len, steps, state)  # a host sync when constrained
            if on_step is not None:  # it reads the tokens anyway: never show a broken step
                check_health(health.tolist(), plan, model, k)
                on_step(steps - 1, tokens, info)
            if steps % CHECK_EVERY == 0 or stops.strings:  # stop strings: each step, so a row ends there
                if stops.strings:
                    new = seq[:, p_len:p_len + steps].tolist()
                    hit = torch.tensor([stops.hit(r) for r in new], device=device)
                    state = search.stop_rows(state, hit)
                done = torch.as_tensor(search.done(state), device=device).reshape(1).long()
                flags = torch.cat([done, health]).tolist()  # one host sync for both
                check_health(flags[1:], plan, model, k)
                if flags[0]:
                    break
        check_health(health.tolist(), plan, model, k)
        if timings is not None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.update(prefill_s=t_prefill - t_start, loop_s=time.perf_counter() - t_prefill,
                           loop_cpu_s=time.thread_time() - c_prefill, steps=steps)
        lim_host = {"prompt": p_len, "max_new": max_new, "steps": steps}
        results = search.finalize(state if paths is None else {**state, ROWS: paths[:, : p_len + steps]},
                                  seq[:, : p_len + steps], lim_host)
        results = constraint.finish(hosts, results, max_new)

    outs = completions(results, plan.recipe, model, texts, ids, stops, logprobs and meaning(search, logprobs),
                       distinct=search.stop_rows.__func__ is BeamPool.stop_rows)
    return _stamped(outs, model, compiled, seed, seeds)


def _stamped(outs, model, compiled, seed, seeds, rounds=None, k=1, draft=None):
    """The completions with their provenance, and each sequence's speculative rounds."""
    for i, c in enumerate(outs):
        c.provenance = stamp(model, compiled, seed, seeds[i] if seeds is not None else None, draft)
        for s in c.sequences if rounds is not None else ():
            own = rounds[i * k + (s.draw or 0)]
            s.speculative = {"proposed": [p for p, _ in own], "accepted": [a for _, a in own]}
    return outs


def generate(model, recipe, prompts, seed: int | None = None, compile: bool = True,  # noqa: A002
             **kw) -> list[Completion]:
    """Decode a list of prompts (texts or token-id lists) with a recipe (text or Recipe)."""
    return run(recipe_plan(recipe), model, prompts, seed=seed, compiled=compile, **kw)
