"""The greenlists of the Kirchenbauer et al. (2023) watermark, drawn exactly as transformers
4.55.4 draws them (WatermarkLogitsProcessor, generation/logits_process.py), for the
`watermark` stage and for `decode detect` (decode.watermark): one definition, shared.

transformers seeds a CPU `torch.Generator` from the last tokens and takes the first
int(V * gamma) ids of `torch.randperm(V)`. That is a Mersenne Twister and a Fisher-Yates
shuffle, sequential and seeded per row: it cannot run inside a compiled step. It does not
need to: with lefthash the greenlist depends on the previous token alone, and with
selfhash (width 1) whether a token is green depends on the token alone, so the stage
reads tables of V greenlists, drawn here once per (vocabulary, gamma, key) with
transformers' own calls, and the compiled step only gathers from them.

    >>> greenlist(seed(torch.tensor([17]), 15485863, "lefthash"), 4096, 0.25).shape
    torch.Size([1024])
"""
from __future__ import annotations

from functools import lru_cache

import torch

TABLE_SIZE = 1_000_003  # transformers' fixed_table: a permutation of this many ids, for selfhash
CANDIDATES = 40         # selfhash tries the 40 likeliest tokens (transformers' rejection sampling)
SEED_MOD = 2**64 - 1    # transformers reduces a seed modulo this before manual_seed


@lru_cache(maxsize=2)
def fixed_table(key: int) -> torch.Tensor:
    """[TABLE_SIZE] long: transformers' `fixed_table`, randperm(TABLE_SIZE) seeded by the key."""
    return torch.randperm(TABLE_SIZE, generator=torch.Generator().manual_seed(key))


def seed(window: torch.Tensor, key: int, scheme: str) -> int:
    """The generator seed for the greenlist after `window` [W] (the last W = width tokens; for
    selfhash the candidate token is the last of them), as transformers' `set_seed`."""
    if scheme == "selfhash":
        table = fixed_table(key)
        a = table[window % TABLE_SIZE] + 1
        b = table[window[-1] % TABLE_SIZE] + 1
        return int((key * a * b).min()) % SEED_MOD  # int64 products wrap, as in transformers
    return key * int(window[-1]) % SEED_MOD


def draw(seed_: int, vocab: int, gamma: float) -> torch.Tensor:
    """[int(vocab * gamma)] long: the green ids for this seed (transformers' `_get_greenlist_ids`
    on CPU; its CUDA generator would draw other ones)."""
    perm = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed_))
    return perm[: int(vocab * gamma)]


greenlist = lru_cache(maxsize=4096)(draw)  # a detector meets the same contexts again


def is_green(window: torch.Tensor, target: int, vocab: int, gamma: float, key: int, scheme: str,
             lists=greenlist) -> bool:
    """Whether `target` is green after `window` (selfhash: `window` ends with `target`)."""
    return bool((lists(seed(window, key, scheme), vocab, gamma) == target).any())


@lru_cache(maxsize=4)
def table(vocab: int, gamma: float, key: int, scheme: str) -> torch.Tensor:
    """lefthash: [V, ceil(V/8)] uint8, row t the greenlist after token t as bits (`unpack`).
    selfhash (width 1): [V] bool, whether each token is green after itself. Built once: V
    greenlists (0.2 s for V = 4096, ~10 s for 32000; then 2 MB, 128 MB)."""
    ids = torch.arange(vocab)
    if scheme == "selfhash":
        return torch.tensor([is_green(ids[c:c + 1], c, vocab, gamma, key, scheme, draw) for c in range(vocab)])
    bits = torch.zeros(vocab, -(-vocab // 8) * 8, dtype=torch.bool)
    for t in range(vocab):
        bits[t, draw(seed(ids[t:t + 1], key, scheme), vocab, gamma)] = True
    return (bits.view(vocab, -1, 8).to(torch.uint8) << torch.arange(8, dtype=torch.uint8)).sum(-1, dtype=torch.uint8)


def unpack(rows: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, vocab] bool from rows of `table` [R, ceil(vocab/8)] uint8."""
    bits = (rows[:, :, None] >> torch.arange(8, dtype=torch.uint8, device=rows.device)) & 1
    return bits.reshape(rows.shape[0], -1)[:, :vocab].bool()


def candidates(logits: torch.Tensor) -> torch.Tensor:
    """[R, V] bool: the CANDIDATES likeliest tokens of each row, found by transformers' own
    call (a descending sort), so ties at the last place go the way its sort puts them."""
    top = logits.sort(dim=-1, descending=True).indices[:, :CANDIDATES]
    return torch.zeros_like(logits, dtype=torch.bool).scatter(1, top, True)
