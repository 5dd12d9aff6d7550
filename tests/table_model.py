"""A bigram "language model" for exact sampling tests: the next token's logits are a row of a
fixed table, chosen by the last token. A sequence's probability is a product of table rows
(after the recipe's stages), so a test can enumerate every sequence and its probability.

    >>> m = TableModel(torch.randn(8, 8), eos=7)
    >>> decode.generate(m, "sample 1000 | topp 0.9 | max 2", [[0]], seed=1, compile=False)

It implements what the engine uses of a model (runtime/model.py): `config`, `tokenizer`,
`parameters()`, `new_cache`, `prefill`, `decode`.
"""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import torch

from decode.compiler.context import StepContext
from decode.compiler.plan import compile as lower
from decode.compiler.stages import bind, run_kernel


class _NoCache:
    """A bigram model keeps no keys or values; beams reorder nothing."""

    def reorder(self, index: torch.Tensor) -> None:
        pass

    follow = reorder

    def followed(self) -> "_NoCache":
        return self


class TableModel(torch.nn.Module):
    def __init__(self, table: torch.Tensor, eos: int):
        super().__init__()
        self.table = torch.nn.Parameter(table.float(), requires_grad=False)
        self.config = SimpleNamespace(vocab_size=table.shape[1], eos_ids=(eos,), pad_id=None, max_seq_len=64)
        self.tokenizer = None

    @classmethod
    def random(cls, seed: int, size: int = 8, scale: float = 1.0) -> "TableModel":
        """A size x size table of N(0, scale**2) logits drawn with `seed`; the last token is EOS."""
        table = torch.randn(size, size, generator=torch.Generator().manual_seed(seed))
        return cls(table if scale == 1.0 else table * scale, eos=size - 1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids]

    def new_cache(self, rows: int, max_len: int) -> _NoCache:
        return _NoCache()

    def prefill(self, cache, tokens: torch.Tensor, pad: torch.Tensor, exits: tuple[int, ...] = ()) -> torch.Tensor:
        assert not exits, "a table model has no layers to exit early from"
        return self.table[tokens[:, -1]]

    def decode(self, cache, tokens: torch.Tensor, slot: torch.Tensor, pad: torch.Tensor,
               exits: tuple[int, ...] = ()) -> torch.Tensor:
        assert not exits, "a table model has no layers to exit early from"
        return self.table[tokens]


def step_probs(model, recipe: str, history: list[int], new: int, logprobs: bool) -> torch.Tensor:
    """[V] float64: the next-token distribution after the recipe's stages, given the whole
    token history (prompt + `new` generated tokens). `logprobs`: the stages see
    log_softmax(logits), as under a beam search. `model(ids) -> [B, T, V]`: a TableModel
    or a llama checkpoint."""
    with torch.no_grad():
        x = model(torch.tensor([history]))[:, -1].float()
    if logprobs:
        x = torch.log_softmax(x, dim=-1)
    eos = tuple(model.config.eos_ids)
    ctx = StepContext.from_input_ids(torch.tensor([history]), eos_ids=eos, new_len=new)
    for st in lower(recipe).stages:
        static, tensors = bind(st.kernel, st.params, None, x.device)
        x = run_kernel(st.kernel, x, ctx, {**static, **tensors})  # stateful: its state after the history
    return torch.softmax(x.double(), dim=-1)[0]


def sequence_probs(model, recipe: str, prompt: list[int], max_new: int,
                   logprobs: bool = False) -> dict[tuple[int, ...], float]:
    """Every sequence of new tokens (ended by EOS or by `max_new`) with its probability
    under the processed distribution; sequences of probability 0 left out."""
    eos = set(model.config.eos_ids)
    out: dict[tuple[int, ...], float] = {}

    def walk(seq: tuple[int, ...], p: float) -> None:
        if seq and (seq[-1] in eos or len(seq) == max_new):
            out[seq] = p
            return
        probs = step_probs(model, recipe, prompt + list(seq), len(seq), logprobs)
        for tok, q in enumerate(probs.tolist()):
            if q > 0:
                walk(seq + (tok,), p * q)

    walk((), 1.0)
    return out


def inclusion_probs(probs: dict, k: int) -> tuple[dict, dict]:
    """Sampling k items without replacement (each draw proportional to p among the rest):
    (P(set), P(item is in the set)), by brute force over ordered k-tuples."""
    items = list(probs)
    sets: dict[frozenset, float] = {}
    k = min(k, len(items))
    for tup in itertools.permutations(items, k):
        p, rest = 1.0, 1.0
        for x in tup:
            p *= probs[x] / rest
            rest -= probs[x]
        key = frozenset(tup)
        sets[key] = sets.get(key, 0.0) + p
    incl = {x: sum(p for s, p in sets.items() if x in s) for x in items}
    return sets, incl


def chi_square(counts: dict, probs: dict, n: int, min_expected: float = 5.0) -> tuple[float, float, int]:
    """Pearson's test of observed `counts` against `probs` over n draws: (statistic,
    p-value, degrees of freedom). Cells expected fewer than `min_expected` times are pooled.
    An observation outside `probs` (a probability-0 outcome) is an error."""
    stray = set(counts) - set(probs)
    assert not stray, f"drew outcomes of probability 0: {sorted(stray)[:5]}"
    obs, exp, pool_o, pool_e = [], [], 0.0, 0.0
    for cell, p in probs.items():
        if n * p < min_expected:
            pool_o += counts.get(cell, 0)
            pool_e += n * p
        else:
            obs.append(counts.get(cell, 0))
            exp.append(n * p)
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    o, e = torch.tensor(obs, dtype=torch.float64), torch.tensor(exp, dtype=torch.float64)
    stat = float(((o - e) ** 2 / e).sum())
    df = len(obs) - 1
    if df == 0:
        return stat, 1.0, 0
    p_value = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                            torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, p_value, df
