"""The interface every search strategy implements (built-in or a user's plugin)."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable

import torch

NEG = -1.0e9  # the reference's "very large negative" score; iterative's filler (beam, diverse: -inf)

# process(scores [r, V], rows: LongTensor [r] | None) -> scores: the recipe's logit stages,
# in written order, applied to the given rows (None = all rows).
Process = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class SearchConfig:
    """Everything a strategy may know that is fixed for one compiled graph."""

    batch: int                     # prompts
    params: dict                   # the search clause's resolved parameters
    modifiers: dict = field(default_factory=dict)  # modifier name -> resolved params
    sampling: bool = False         # select by sampling (True) or by argmax
    eos: tuple[int, ...] = ()      # end-of-sequence ids
    pad: int = 0                   # token written after a row has finished
    trace: bool = False            # also return the candidates considered (for traces)


class Search(abc.ABC):
    """One decoding strategy.

    Subclasses set `rows` (rows per prompt) and implement `init`, `step` and `finalize`.
    `step` runs inside the compiled graph: tensors only, static shapes, no host sync.

    State is a dict of tensors so that it passes through torch.compile unchanged in
    structure. Numeric parameters a user may sweep (length penalty, diversity penalty)
    arrive in `hp`, a dict of 0-d tensors, so changing them reuses the compiled graph.
    """

    rows: int = 1
    logprobs: bool = True  # stages see log_softmax(logits) (beam family) or raw logits

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg

    def hyper(self) -> dict[str, float]:
        """Numeric parameters to pass as tensors in `hp` (name -> value)."""
        return {}

    def structure(self) -> tuple:
        """What the compiled graph depends on: everything but the `hyper()` numbers."""
        hyper = set(self.hyper())

        def strip(d: dict) -> tuple:
            return tuple(sorted((k, repr(v)) for k, v in d.items() if k not in hyper))

        c = self.cfg
        mods = tuple(sorted((m, strip(p)) for m, p in c.modifiers.items()))
        return (type(self), strip(c.params), mods, c.sampling, c.eos, c.pad, c.batch, c.trace)

    @abc.abstractmethod
    def init(self, device: torch.device, seq_len: int) -> dict[str, torch.Tensor]:
        """The state before the first step (a dict of tensors)."""

    @abc.abstractmethod
    def step(self, t, scores, process: Process, noise, seq, lim, hp, state):
        """One step. Returns (tokens [R], parents [R] or None, new state, info).

        t: 0-d long, tokens generated so far; scores: [R, V] float32 (log-probs if
        `self.logprobs` else logits), not yet processed; noise: [R, V] uniform(0,1) draws
        or None; seq: [R, S] token slots of each row; lim: dict with 0-d long `prompt`
        (padded prompt length = slot of the first new token) and `max_new`.
        `info` is {} unless `cfg.trace`: then the candidates this step considered, as
        `candidates(...)` builds them.
        """

    @abc.abstractmethod
    def done(self, state) -> torch.Tensor:
        """0-d bool: nothing can change any more (checked every few steps)."""

    def stop_rows(self, state, rows: torch.Tensor) -> dict:
        """Rows [R] bool whose text hit a stop string: finish them if the strategy can.
        Beam-family strategies keep searching; the engine cuts their results at the end."""
        return state

    @abc.abstractmethod
    def finalize(self, state, seq, lim) -> list[list[tuple[list[int], float, str]]]:
        """Per prompt, best first: (new token ids incl. a final EOS, score, finish)."""

    # helpers shared by the strategies
    def is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(tokens, dtype=torch.bool)
        for e in self.cfg.eos:
            out = out | (tokens == e)
        return out


def candidates(token, logp, parent, kept, finished, group=None, penalty=None) -> dict:
    """Trace info: per prompt [B, C] candidates with their processed log-prob (or the
    search's score), the row they extend, whether they survived, whether they ended, their
    group, and the diversity penalty already subtracted from `logp` (0 if none)."""
    if group is None:
        group = torch.zeros_like(token)
    if penalty is None:
        penalty = torch.zeros_like(logp)
    return {"token": token, "logp": logp, "parent": parent, "kept": kept,
            "finished": finished, "group": group, "penalty": penalty}


def gumbel(noise: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) draws from uniform(0, 1) draws (clamped away from 0 and 1)."""
    u = noise.clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


CHUNK = 256  # `draw` picks a chunk of this many scores first, then an entry in it


def draw(scores: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[B, n] indices drawn without replacement from softmax(scores) ([B, N]), in draw order.

    Successive sampling by inverse CDF, the distribution of the reference's
    `multinomial(softmax(scores), n)` and of Gumbel-top-k, reading n uniforms per row
    (u: [B, n] in (0, 1)) instead of N. The scores are cut into chunks of CHUNK; one pass
    over them gives each chunk's log-sum-exp. Draw j then takes u[:, j] of the mass not
    drawn yet: first a chunk (over the C = N / CHUNK chunk masses, relative to the largest),
    then an entry of that chunk (relative to the chunk's largest), whose chunk mass is then
    recomputed without it. Everything after the first pass is float64 and relative to a
    maximum, so nothing underflows that a draw could still reach (a cold `temp 0.01` draws
    its candidates in score order, as it should). When fewer than n entries are possible
    (-inf scores), the remaining draws take the lowest indices not drawn yet.
    """
    b, size = scores.shape
    n = u.shape[1]
    pad = -size % CHUNK
    x = scores.float()
    if pad:
        x = torch.nn.functional.pad(x, (0, pad), value=float("-inf"))
    x3 = x.view(b, -1, CHUNK)
    top = x3.amax(-1, keepdim=True)
    mass = torch.exp(x3 - top.clamp(min=-1e30)).sum(-1, dtype=torch.float64)
    logmass = mass.log() + top.squeeze(-1)                                # [B, C]; empty: -inf
    drawn = torch.full((b, n), -1, dtype=torch.long, device=scores.device)
    slots = torch.arange(n, device=scores.device)
    onehot = slots[:, None] == slots  # row j marks draw j: one compiled region serves every draw
    for j in range(n):
        logmass, drawn = _draw_one(x3, logmass, drawn, u, onehot[j])
    return drawn


def _last_positive(w: torch.Tensor) -> torch.Tensor:
    """[B, 1]: the last index with w > 0 (-1 if none)."""
    return torch.where(w > 0, torch.arange(w.shape[-1], device=w.device), -1).amax(-1, keepdim=True)


def _pick(w: torch.Tensor, u: torch.Tensor):
    """Inverse CDF over non-negative weights w [B, M] (float64) at u [B, 1] in [0, 1):
    (index [B, 1] with w > 0, the fraction of that entry's weight below the point)."""
    cum = w.cumsum(-1)
    target = u * cum[:, -1:]
    i = torch.minimum((cum <= target).sum(-1, keepdim=True), _last_positive(w))
    i = i.clamp(min=0)
    wi = w.gather(1, i)
    below = (target - (cum.gather(1, i) - wi)).clamp(min=0.0)
    return i, (below / torch.where(wi > 0, wi, 1.0)).clamp(max=1.0 - 2.0**-53)


def _draw_step(x3: torch.Tensor, logmass: torch.Tensor, drawn: torch.Tensor, u: torch.Tensor,
               slot: torch.Tensor):
    """The draw `slot` ([n] bool, one True) of `draw`: (chunk log-masses without the entry
    drawn, `drawn` with it written in its slot)."""
    b, _, size = x3.shape
    n = drawn.shape[1]
    dev = x3.device
    u = torch.where(slot, u, 0.0).sum(-1)  # this draw's uniform
    peak = logmass.amax(-1, keepdim=True)
    alive = peak > float("-inf")                                       # anything left to draw
    c, frac = _pick(torch.exp(logmass - torch.where(alive, peak, 0.0)), u[:, None].double())
    pos = c * size + torch.arange(size, device=dev)                    # [B, CHUNK] global indices
    taken = (pos[:, :, None] == drawn[:, None, :]).any(-1)
    chunk = x3.gather(1, c[:, :, None].expand(b, 1, size)).squeeze(1).double()
    row = torch.where(taken, float("-inf"), chunk)
    top = row.amax(-1, keepdim=True)
    w = torch.exp(row - torch.where(top > float("-inf"), top, 0.0))
    i, _ = _pick(w, frac)
    rest = torch.where(torch.arange(size, device=dev) == i, float("-inf"), row)  # the chunk without it
    top = rest.amax(-1, keepdim=True)
    left = torch.exp(rest - torch.where(top > float("-inf"), top, 0.0)).sum(-1, keepdim=True).log() + top
    logmass = logmass.scatter(1, c, torch.where(alive, left, logmass.gather(1, c)))
    # nothing possible left: the lowest index not drawn (one of 0..n)
    low = torch.arange(n + 1, device=dev)
    free = ~(low[None, :, None] == drawn[:, None, :]).any(-1)
    filler = torch.argmax(free.int(), -1, keepdim=True)
    idx = torch.where(alive, c * size + i, filler)
    return logmass, torch.where(slot, idx, drawn)


# one region, compiled once and called for every draw of every group
_region = getattr(torch.compiler, "nested_compile_region", None)
_draw_one = _draw_step if _region is None else _region(_draw_step)


def trim(ids: list[int], eos: tuple[int, ...]) -> tuple[list[int], str]:
    """Cut new tokens after the first EOS (kept); say why the sequence ended."""
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[: i + 1], "eos"
    return ids, "max"
