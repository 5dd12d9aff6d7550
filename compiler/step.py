"""The hot path: prefill, and one decode step, as plain functions (compiled per structure).

One step reads top to bottom: the search gets the step's scores and the logit chain (the
recipe's stages in written order, each may keep state), chooses; the engine reorders the
KV cache, the token history and the stages' state for beams, lets stateful stages see the
chosen tokens (`accept`), writes the new token, and runs the model on it (beams read the
KV cache through parent pointers: nothing but the pointers moves). The numbers of a
recipe enter as tensors, so a sweep over them reuses the compiled graph.
"""
from __future__ import annotations

import torch

from decode.compiler.context import StepContext
from decode.compiler.logprobs import StepLogprobs
from decode.compiler.guidance import both, split
from decode.compiler.noise import uniform
from decode.compiler.search.base import At
from decode.compiler.search.record import offered, row_candidates
from decode.compiler.stages import selection, stateful

# What the step notes about a row whose scores cannot be decoded: code MODEL, the model's
# logits were not finite; code STAGE + 2*i (+1 for NaN/inf rather than all -inf): the
# i-th logit stage broke the row
MODEL, STAGE = 1, 2


def prefill(model, cache, seq, pad, p_len: int, search=None, state=None, exits: tuple[int, ...] = (),
            keys=None, hp=None):
    """The logits [R, V] after the prompts (left-padded in `seq` [R, S] up to slot p_len), and
    the search's `state`, which a search that looks ahead takes from the prompts' hidden states;
    the logits are [1 + E, R, V] with the early exits a search reads (`Search.exits`), and
    (logits, hidden states [R, dim]) for a search with `hidden`."""
    if search is None or not search.ahead:
        zero = torch.zeros((), dtype=torch.long, device=seq.device)
        out = model.prefill(cache, seq[:, :p_len], pad, **_asked(exits, search, keys, zero, hp))
        if search is not None and search.hidden:  # the prompts' last slot is a slice: give the step one layout
            out = (out[0], out[1].contiguous())
        return out, state
    logits, hidden = model.prefill_hidden(cache, seq[:, :p_len], pad)
    rows = search.cfg.batch * search.rows  # cfg's unconditional rows follow: they keep no context
    return logits, search.prompted(state, hidden[:rows], seq.shape[1])


def _asked(exits: tuple[int, ...], search=None, keys=None, t=None, hp=None) -> dict:
    """What the step asks of the model besides the logits: early exits when the search reads
    them, the hidden states (changed before the head as the search says) when it reads those
    (a model without them, such as a test's table model, is never asked)."""
    asked = {"exits": exits} if exits else {}
    if search is not None and search.hidden:
        asked.update(hidden=True, before_head=search.before_head(keys, t, hp))
    return asked


def has_hidden(model) -> bool:
    """Whether `model` gives its hidden states (`decode(..., hidden=True)`) and output embeddings."""
    import inspect

    head = getattr(getattr(model, "output", None), "weight", None)
    return isinstance(head, torch.Tensor) and "hidden" in inspect.signature(model.decode).parameters


class Ahead:
    """A search's look one step ahead (At.ahead, At.take): K candidates per row run in one
    forward, their keys and values in the K cache slots from `scratch` on; the one a
    row takes moves to its slot, and its logits are the next step's. With cfg the
    unconditional rows (after the `rows` rows of the search) run the same candidates and
    take the same one: the search sees its own rows only."""

    def __init__(self, model, cache, slot, pad, scratch: int, rows: int):
        self.model, self.cache, self.slot, self.pad, self.scratch = model, cache, slot, pad, scratch
        self.rows, self.twins = rows, pad.shape[0] > rows
        self.seen = self.logits = None

    def run(self, tokens):
        both = torch.cat([tokens, tokens]) if self.twins else tokens
        self.seen, hidden = self.model.candidates(self.cache, both, self.slot, self.pad, self.scratch)
        return self.seen[:self.rows], hidden[:self.rows]

    def take(self, index):
        index = torch.cat([index, index]) if self.twins else index
        self.cache.copy_slot(self.scratch + index, self.slot)
        at = index.view(-1, 1, 1).expand(-1, 1, self.seen.shape[-1])
        self.logits = self.seen.gather(1, at)[:, 0]

    def next_logits(self, parents):
        if self.logits is None:
            raise TypeError("a search with `ahead` must call at.take(index) with the candidate each row took")
        if parents is not None and self.twins:
            parents = torch.cat([parents, parents + self.rows])
        return self.logits if parents is None else self.logits[parents]


def context(seq, pad, prompt, t, eos, guide=None, max_new=None, keys=None, begin=None) -> StepContext:
    """What a stage reads at step t: the rows' token slots and which of them are filled, the
    logits of their unconditional rows (cfg), the run's `max` and the rows' random keys (a
    stage that draws, as xtc does, reads its own stream of them). `begin` [R]: the step at
    which each row's prompt joined (continuous batching, refill.py); its own count of new
    tokens is then t - begin ([R, 1]), its generated slots those from prompt + begin on."""
    slots = torch.arange(seq.shape[1], device=seq.device)
    length = prompt + t
    first, new_len = (prompt, t) if begin is None else ((prompt + begin)[:, None], (t - begin)[:, None])
    generated = (slots >= first) & (slots < length)
    return StepContext(tokens=seq, valid=(slots[None, :] >= pad[:, None]) & (slots[None, :] < length),
                       generated=generated.expand_as(seq), length=length, new_len=new_len, eos=eos,
                       guide=guide, max_new=max_new, keys=keys)


def decode_step(model, search, chain, trace, cache, t, logits, keys, seq, pad, lim, hp, sp, state, sst, health,
                paths=None):
    """One step in one graph, the selection then the model's forward on the chosen tokens:
    (logits, seq, state, stage states, tokens, trace info, health, paths). A search whose
    forward is the model's own (forward.py: `shared`) runs `select_step` instead, and the
    engine the forward compiled once per model and shape."""
    seq, state, sst, tokens, info, health, paths, fed, moved = select_step(
        model, search, chain, trace, cache, t, logits, keys, seq, pad, lim, hp, sp, state, sst, health, paths)
    if not search.ahead:  # a search that looks ahead has the next logits already (`fed`)
        rows = cache if moved is None else cache.followed()
        fed = model.decode(rows, fed, lim["prompt"] + t, pad, **_asked(search.exits(model.config), search, keys,
                                                                         t + 1, hp))
    return fed, seq, state, sst, tokens, info, health, paths


def select_step(model, search, chain, trace, cache, t, logits, keys, seq, pad, lim, hp, sp, state, sst, health,
                paths=None):
    """The step up to the chosen tokens: (seq, state, stage states, tokens, trace info, health,
    paths, fed, moved); `paths` [R, S, F]: the rows' per-token log-probs (logprobs.py), None
    when not asked for. With cfg the logits and `pad` also hold the unconditional rows, after
    the rows (guidance.py). `fed`: the tokens the model runs next (the unconditional rows'
    after the rows'), or for a search that looks ahead the next logits; `moved`: the rows'
    parents (the cache then reads through parent pointers), None when rows stay in place."""
    exits = search.exits(model.config)
    logits, hidden = logits if search.hidden else (logits, None)  # the rows' last hidden states
    early = logits[1:] if exits else None  # the layers' early exits ride under the final logits
    logits = logits[0] if exits else logits
    logits, guide = split(logits, seq.shape[0])
    early = None if early is None else early[:, :seq.shape[0]]
    hidden = None if hidden is None else hidden[:seq.shape[0]]
    scores = torch.log_softmax(logits, dim=-1) if search.logprobs else logits
    eos = torch.tensor(search.cfg.eos, dtype=torch.long, device=seq.device)
    row_pad = pad[:seq.shape[0]]  # the rows' own (cfg's unconditional rows follow them in `pad`)
    begin = lim.get("begin")  # continuous batching: each row's own step counter is t - begin
    ctx = context(seq, row_pad, lim["prompt"], t, eos, guide, lim["max_new"], keys, begin) if chain else None
    seen, marks = {}, []  # per stage index: [(rows, its output)]; (rows, broken code)

    def process(x, rows=None):
        c = ctx if rows is None or ctx is None else ctx.subset(rows)
        code = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for i, ((name, kernel, static), dyn) in enumerate(zip(chain, sp)):
            if stateful(kernel):
                own = sst[i] if rows is None else {k: v[rows] for k, v in sst[i].items()}
                x = kernel.apply(x, c, own, **static, **dyn)
                seen.setdefault(i, []).append((rows, x))
            else:
                x = kernel.apply(x, c, **static, **dyn)
            code = torch.where(code == 0, broken(x, STAGE + 2 * i), code)
        marks.append((rows, code))
        seen.setdefault(-1, []).append((rows, x))
        return x

    own_t = t if begin is None else (t - begin)[:, None]  # a row's draws: as when decoded alone
    noise = None if keys is None or not search.cfg.sampling else uniform(keys, own_t, logits.shape[-1])
    slot = lim["prompt"] + t
    lp = None if paths is None else StepLogprobs(paths, torch.log_softmax(logits.float(), dim=-1),
                                                 lambda: gathered(seen.get(-1), scores), search.renormalizes,
                                                 slot)
    look = Ahead(model, cache, slot, pad, seq.shape[1], seq.shape[0]) if search.ahead else None
    at = At(t=t, process=process, noise=noise, seq=seq, prompt=lim["prompt"], max_new=lim["max_new"],
            hp=hp, trace=trace, selects=selection(kernel for _, kernel, _ in chain), logprobs=lp, pad=row_pad,
            ahead=look and look.run, take=look and look.take, exits=early, hidden=hidden,
            head=model.output.weight if search.hidden else None, keys=keys)
    alive = state["alive"] if "alive" in state else None
    tokens, parents, state, info = search.advance(scores, at, state)
    health = note(health, t, broken(logits, MODEL, MODEL), marks)
    if trace and info is None:  # independent rows: the engine lists what they chose from
        live = (alive if parents is None else alive[parents]) & torch.isfinite(state["score"])
        info = row_candidates(gathered(seen.get(-1), scores), tokens, parents, live,
                              search.is_eos(tokens) & live, search.cfg.batch)
    if trace:  # the row each new row continues, for the tree
        info = {**info, "from": torch.arange(tokens.shape[0], device=seq.device) if parents is None else parents}
    else:
        info = {}
    sst = [accept(kernel, sst[i], gathered(seen.get(i), scores), tokens, parents, static, dyn)
           if stateful(kernel) else sst[i] for i, ((_, kernel, static), dyn) in enumerate(zip(chain, sp))]
    if lp is not None:  # each row's log-probs follow it, as its tokens do
        paths = lp.rows(tokens, parents)
        if trace:  # for decode.steps: this step's entry of each row, and of each candidate listed
            info = {**info, "logprobs": paths[:, slot], "offered": offered(info, lp.entry, seq.shape[0])}
    moved = None
    if parents is not None:
        seq = seq[parents]
        moved = both(parents, guide, shift=True)  # unconditional rows move with theirs
        # the forward reads the moved rows through parent pointers (runtime/cache.py); a
        # look-ahead writes scratch slots, so there the rows are copied
        if look is None:
            cache.follow(moved)
        else:
            cache.reorder(moved)
            moved = None
    seq = seq.scatter(1, slot.expand(seq.shape[0], 1), tokens[:, None])
    fed = both(tokens, guide) if look is None else look.next_logits(parents)
    return seq, state, sst, tokens, info, health, paths, fed, moved


def accept(kernel, st, out, tokens, parents, static, dyn):
    """A stateful stage's state after the search chose `tokens` (rows moved to `parents`)."""
    if parents is not None:
        st, out = {k: v[parents] for k, v in st.items()}, out[parents]
    return kernel.accept(st, tokens, out, **static, **dyn)


def gathered(parts, like):
    """[R, V]: the outputs a stage gave for row subsets, put together (rows None: all)."""
    if not parts:
        return like
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    full = like  # rows no call processed keep the scores they came with
    for rows, x in parts:
        full = x if rows is None else full.index_copy(0, rows, x.to(full.dtype))
    return full


def broken(scores: torch.Tensor, code: int, nan_code: int | None = None) -> torch.Tensor:
    """[R] long: `code` where a row leaves nothing to choose (every score -inf), `nan_code`
    (default code + 1) where it holds NaN or +inf, else 0. One max per row: it is NaN if
    any score is, +inf if any is, -inf only if all are."""
    top = scores.amax(-1)
    nan_code = code + 1 if nan_code is None else nan_code
    return torch.where(torch.isfinite(top), 0, torch.where(top == float("-inf"), code, nan_code))


def note(health: torch.Tensor, t, model_code: torch.Tensor, marks) -> torch.Tensor:
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
