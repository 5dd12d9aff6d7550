"""The engine: prefill -> step* -> finalize, for a batch of prompts.

The step (one function, compiled once per recipe *structure*) reads top to bottom:
forward one token for every row, apply the logit stages in written order, let the search
choose, reorder the KV cache and the token history for beams, write the new token. The
numbers of a recipe (top-p, length penalty, ...) enter as tensors, so a sweep over them
reuses the compiled graph.
"""
from __future__ import annotations

import math
import time
import types
from dataclasses import asdict, dataclass, field

import torch

from decode import jsonl
from decode.compiler import step_cache
from decode.compiler.arguments import check_model, prompt_list, recipe_plan, seed_value
from decode.compiler.context import StepContext
from decode.compiler.kernel_cache import first_call
from decode.compiler.noise import row_keys, uniform
from decode.compiler.plan import Plan
from decode.compiler.plugins import checked_step
from decode.compiler.search.base import SearchConfig
from decode.compiler.stages import bind
from decode.compiler.stops import StopStrings
from decode.runtime.errors import ModelError, check_fits, require_tokenizer
from decode.runtime.memory import check_decode

CHECK_EVERY = 8        # host syncs on "all finished" once every this many steps
SEQ_BUCKET = 32        # cache length rounds up to this, so prompt lengths share graphs
# What the step notes about a row whose scores cannot be decoded: the first (step, row,
# code) where it happened; code MODEL: the model's logits were not finite; code
# STAGE + 2*i (+1 for NaN/inf rather than all -inf): the i-th logit stage broke the row
MODEL, STAGE = 1, 2


@dataclass
class Sequence:
    ids: list[int]          # new tokens only (a final EOS included)
    text: str
    score: float
    finish: str             # "eos" | "max" | "stop"


@dataclass
class Completion:
    prompt: str | None
    prompt_ids: list[int]
    recipe: str             # canonical form
    fingerprint: str
    sequences: list[Sequence] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in ("prompt", "prompt_ids", "recipe", "fingerprint", "sequences")}

    def dumps(self) -> str:
        return jsonl.dumps(self.to_json())


# ----------------------------------------------------------------------------- binding

def eos_ids(model) -> tuple[int, ...]:
    """The model's end-of-sequence ids (its config may give one, a list or None)."""
    eos = model.config.eos_ids
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None)


def _pad_id(model, eos) -> int:
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


def _bind_stages(plan: Plan, model, eos, beams: bool, device):
    """[(name, kernel, static params, tensor params)] for the plan's stages, in order."""
    bound = []
    for st in plan.stages:
        params = dict(st.params)
        if beams and plan.sampling and "keep" in params:
            # the reference keeps 1 + #EOS tokens in beam sampling so a beam can always go on
            params["keep"] = max(int(params["keep"]), len(eos) + 1)
        static, tensors = bind(st.kernel, params, getattr(model, "tokenizer", None), device)
        bound.append((st.name, st.kernel, static, tensors))
    return bound


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


# ----------------------------------------------------------------------------- the step

def _build_step(model, search, kernels):
    """The step function for one structure. `kernels`: [(name, module, static params)]."""
    eos = torch.tensor(search.cfg.eos, dtype=torch.long)

    def process_fn(seq, pad, lim, t, sp, marks):
        s = seq.shape[1]
        slots = torch.arange(s, device=seq.device)
        length = lim["prompt"] + t

        def process(scores, rows):
            if not kernels:
                return scores
            tokens = seq if rows is None else seq[rows]
            p = pad if rows is None else pad[rows]
            ctx = StepContext(
                tokens=tokens,
                valid=(slots[None, :] >= p[:, None]) & (slots[None, :] < length),
                generated=((slots >= lim["prompt"]) & (slots < length))[None, :].expand_as(tokens),
                length=length,
                new_len=t,
                eos=eos.to(seq.device),
            )
            code = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
            for i, ((name, kernel, static), dyn) in enumerate(zip(kernels, sp)):
                scores = kernel.apply(scores, ctx, **static, **dyn)
                code = torch.where(code == 0, _broken(scores, STAGE + 2 * i), code)
            marks.append((rows, code))
            return scores

        return process

    def step(cache, t, logits, keys, seq, pad, lim, hp, sp, state, health):
        scores = torch.log_softmax(logits, dim=-1) if search.logprobs else logits
        noise = None if keys is None else uniform(keys, t, logits.shape[-1])
        marks = []  # (rows, code) of each `process` call
        process = process_fn(seq, pad, lim, t, sp, marks)
        tokens, parents, state, info = search.step(t, scores, process, noise, seq, lim, hp, state)
        health = _note(health, t, _broken(logits, MODEL, MODEL), marks)
        if search.cfg.trace:
            info = {**info, "from": parents if parents is not None
                    else torch.arange(tokens.shape[0], device=tokens.device)}
        if parents is not None:
            seq = seq[parents]
            cache.reorder(parents)
        slot = lim["prompt"] + t
        seq = seq.scatter(1, slot.expand(seq.shape[0], 1), tokens[:, None])
        logits = model.decode(cache, tokens, slot, pad)
        return logits, seq, state, tokens, info, health

    return step


def _broken(scores: torch.Tensor, code: int, nan_code: int | None = None) -> torch.Tensor:
    """[R] long: `code` where a row leaves nothing to choose (every score -inf), `nan_code`
    (default code + 1) where it holds NaN or +inf, else 0. One max per row: it is NaN if
    any score is, +inf if any is, -inf only if all are."""
    top = scores.amax(-1)
    nan_code = code + 1 if nan_code is None else nan_code
    return torch.where(torch.isfinite(top), 0, torch.where(top == float("-inf"), code, nan_code))


def _note(health: torch.Tensor, t, model_code: torch.Tensor, marks) -> torch.Tensor:
    """`health` ([3] long: step, row, code; step -1 while all is well) with the first broken
    row of this step noted, if it is the first; on the device, no host sync."""
    code = model_code
    for rows, c in marks:
        if rows is None:
            code = torch.where(code == 0, c, code)
        else:
            now = code[rows]
            code = code.index_copy(0, rows, torch.where(now == 0, c, now))
    bad = code > 0
    row = torch.argmax(bad.to(torch.int32)).view(1)
    first = torch.cat([t.view(1), row, code.gather(0, row)])
    return torch.where((health[0] < 0) & bad.any(), first, health)


def _get_step(model, search, kernels, compiled: bool, s_len: int):
    """The step function for this structure and these shapes, compiled once per process.

    The key names everything the graph depends on except tensor values, so the compiled
    function runs without dynamo's per-call guard checks (they cost ~0.4 ms a step).
    """
    key = (s_len, search.structure(), tuple((n, kernel, _freeze(st)) for n, kernel, st in kernels),
           compiled)

    def build(name: str):
        fn = _build_step(model, search, kernels)
        # dynamo keeps its compiled graphs on the code object: give each step its own
        code = fn.__code__.replace(co_name=name)
        fn = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
        if not compiled:
            return fn
        opts = {}
        skip = getattr(torch.compiler, "skip_all_guards_unsafe", None)
        if skip is not None:
            opts["guard_filter_fn"] = skip
        if next(model.parameters()).is_cuda:
            # "reduce-overhead": the step replays as one CUDA graph (the KV cache is
            # marked static in `run`, and the draws are computed in the graph)
            opts["triton.cudagraphs"] = True

        def make(fn=fn, opts=opts):
            return torch.compile(fn, fullgraph=True, dynamic=False, options=opts or None)

        return first_call(make(), fn, make)

    return step_cache.get(model, key, build)


# ----------------------------------------------------------------------------- the loop


def _row_keys(plan: Plan, seed, seeds, b: int, rows: int, device):
    """The random-number keys of the rows (see noise.py), None when the recipe does not sample.

    Prompt i's seed is `seeds[i]` if given, else derived from the run seed (the `seed`
    argument, else the recipe's `seed` clause, else a fresh random one) and i; its rows'
    draws depend on that seed alone, not on the batch.
    """
    if not plan.sampling:
        return None
    if seeds is None:
        base = seed if seed is not None else plan.seed
        base = int(base) if base is not None else int(torch.seed() % (1 << 62))
        seeds = [derive_seed(base, i) for i in range(b)]
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} prompts; give one seed per prompt")
    return row_keys(seeds, rows, device)


def derive_seed(base: int, key) -> int:
    """A stable 63-bit seed from a run seed and a prompt key (index or id)."""
    import hashlib

    digest = hashlib.sha256(f"{int(base)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def run(plan: Plan, model, prompts, seed: int | None = None, compiled: bool = True,
        on_step=None, trace: bool = False, seeds: list[int] | None = None,
        timings: dict | None = None) -> list[Completion]:
    """Decode `prompts` with a compiled plan.

    Sampling is seeded per prompt (see `_row_keys`): `seeds` gives each prompt's seed.
    `timings`, if given, receives prefill_s, loop_s (the step loop) and steps.

    `on_step(t, tokens, info)` sees each step's chosen tokens [R] and, with `trace=True`,
    the candidates the search considered (see `search.base.candidates`).
    """
    check_model(model)
    seed = seed_value(seed)
    seeds = None if seeds is None else [seed_value(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    eos = eos_ids(model)
    pad_id = _pad_id(model, eos)
    texts, ids = _encode(model, prompts)
    b = len(ids)
    device = next(model.parameters()).device
    cfg = SearchConfig(batch=b, params=plan.search_params, modifiers=plan.modifiers,
                       sampling=plan.sampling, eos=eos, pad=pad_id, trace=trace)
    search = plan.search(cfg)
    k = search.rows
    bound = _bind_stages(plan, model, eos, getattr(search, "keeps_eos_alternative", False), device)
    kernels = [(n, mod, st) for n, mod, st, _ in bound]
    sp = [dyn for *_, dyn in bound]
    hp = {kk: torch.tensor(v, device=device, dtype=torch.float32) for kk, v in search.hyper().items()}

    p_len = max(len(x) for x in ids)
    max_new = plan.max_new
    check_fits(p_len, max_new, model.config)
    s_len = -(-(p_len + max_new) // SEQ_BUCKET) * SEQ_BUCKET
    s_len = min(s_len, max(model.config.max_seq_len, p_len + max_new))
    check_decode(model, b * k, s_len, p_len, fix=f"Lower the beam/sample width (now {k}), the "
                 f"prompts decoded together (now {b}) or `max` (now {max_new}).")

    keys = _row_keys(plan, seed, seeds, b, k, device)
    step = _get_step(model, search, kernels, compiled, s_len)
    if compiled:  # plugin code runs one eager step first, so that its errors read plainly
        step = checked_step(step, lambda: _get_step(model, search, kernels, False, s_len),
                            [search, *(kernel for _, kernel, _ in kernels)])
    stops = StopStrings(plan.stop, model.tokenizer)
    with torch.inference_mode():
        # rows: each prompt repeated for its k beams / samples, left-padded to a common length
        seq = torch.full((b * k, s_len), pad_id, dtype=torch.long, device=device)
        pad = torch.empty(b * k, dtype=torch.long, device=device)
        for i, x in enumerate(ids):
            for j in range(k):
                seq[i * k + j, p_len - len(x):p_len] = torch.tensor(x)
                pad[i * k + j] = p_len - len(x)
        lim = {"prompt": torch.tensor(p_len, device=device), "max_new": torch.tensor(max_new, device=device)}
        t_start = time.perf_counter()
        cache = model.new_cache(b * k, s_len)
        if compiled and device.type == "cuda" and isinstance(cache, torch.nn.Module):
            for buf in cache.buffers():  # written in place by the step: CUDA graphs need fixed addresses
                torch._dynamo.mark_static_address(buf)
        logits = model.prefill(cache, seq[:, :p_len], pad)
        if timings is not None and logits.is_cuda:
            torch.cuda.synchronize()
        t_prefill, c_prefill = time.perf_counter(), time.thread_time()
        state = search.init(device, s_len)
        t = torch.zeros((), dtype=torch.long, device=device)
        health = torch.tensor([-1, 0, 0], dtype=torch.long, device=device)
        steps = 0
        for steps in range(1, max_new + 1):
            logits, seq, state, tokens, info, health = step(cache, t, logits, keys, seq, pad, lim, hp,
                                                            sp, state, health)
            t = t + 1
            if on_step is not None:  # it reads the tokens anyway: never show a broken step
                _check_health(health.tolist(), plan, model, k)
                on_step(steps - 1, tokens, info)
            if steps % CHECK_EVERY == 0:
                if stops.strings:
                    new = seq[:, p_len:p_len + steps].tolist()
                    hit = torch.tensor([stops.hit(r) for r in new], device=device)
                    state = search.stop_rows(state, hit)
                done = torch.as_tensor(search.done(state), device=device).reshape(1).long()
                flags = torch.cat([done, health]).tolist()  # one host sync for both
                _check_health(flags[1:], plan, model, k)
                if flags[0]:
                    break
        _check_health(health.tolist(), plan, model, k)
        if timings is not None:
            if logits.is_cuda:
                torch.cuda.synchronize()
            timings.update(prefill_s=t_prefill - t_start, loop_s=time.perf_counter() - t_prefill,
                           loop_cpu_s=time.thread_time() - c_prefill, steps=steps)
        lim_host = {"prompt": p_len, "max_new": max_new, "steps": steps}
        results = search.finalize(state, seq[:, : p_len + steps], lim_host)

    recipe = plan.recipe
    out = []
    for i in range(b):
        seqs = []
        for new_ids, score, finish in results[i]:
            cut = stops.cut(new_ids) if stops.strings else None
            if cut is not None:
                new_ids, finish = new_ids[:cut], "stop"
            text = model.tokenizer.decode(new_ids) if model.tokenizer is not None else ""
            seqs.append(Sequence(ids=list(new_ids), text=text, score=float(score), finish=finish))
        _check_result(i, seqs, recipe)
        out.append(Completion(prompt=texts[i], prompt_ids=ids[i], recipe=recipe.canonical,
                              fingerprint=recipe.fingerprint, sequences=seqs))
    return out


def _check_health(health: list[int], plan: Plan, model, k: int) -> None:
    """Raise if the step noted a broken row: ModelError when the model's logits were not
    finite, ValueError naming the logit stage that removed every token (or made NaN)."""
    t, row, code = health
    if t < 0:
        return
    where = f"step {t}, prompt {row // k}"
    if code == MODEL:
        raise ModelError(f"the model's logits are NaN or infinite at {where}: {_weights_problem(model)}")
    clause = plan.recipe.stages[(code - STAGE) // 2]
    kernel = plan.stages[(code - STAGE) // 2].kernel
    who = f"'{clause.canonical}'"
    if getattr(kernel, "where", None):  # a user stage: say where its code is
        who += f" (the user stage {kernel.where})"
    if (code - STAGE) % 2 == 0:
        raise ValueError(f"{where}: every token was removed by {who}: its scores were all -inf; "
                         "loosen it (or the clauses before it) so that at least one token stays")
    raise ValueError(f"{where}: every token was removed by {who}: it made the scores NaN or "
                     "infinite; its numbers (or the scores the clauses before it gave it) "
                     "overflow float32: use smaller values")


def _weights_problem(model) -> str:
    """Why a model's logits are not finite: NaN/Inf weights (named), else the activations."""
    source = getattr(model, "source", None) or "the checkpoint"
    for name, p in getattr(model, "named_parameters", lambda: ())():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            return (f"the checkpoint's weights contain NaN/Inf ({name} in {source}); "
                    "re-download or re-convert it")
    return ("its weights are finite, so the activations overflowed; load the model in float32 "
            "(--dtype float32)")


def _check_result(i: int, seqs: list[Sequence], recipe) -> None:
    """Every prompt gets at least one sequence, and every score is a finite number."""
    search = f"'{recipe.search.canonical}'"
    if not seqs:
        raise ValueError(f"prompt {i}: {search} found no sequence: the logit stages removed "
                         "every continuation; loosen them")
    for j, s in enumerate(seqs):
        if not math.isfinite(s.score):
            raise ValueError(f"prompt {i}: {search} gave sequence {j} the score {s.score}: the "
                             "scores overflowed float32; use smaller penalties, biases or lenpen")


def generate(model, recipe, prompts, seed: int | None = None, compile: bool = True,  # noqa: A002
             **kw) -> list[Completion]:
    """Decode a list of prompts (texts or token-id lists) with a recipe (text or Recipe)."""
    return run(recipe_plan(recipe), model, prompts, seed=seed, compiled=compile, **kw)
