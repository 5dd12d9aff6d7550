"""The uniform draws behind sampling: a counter-based hash of (row key, step, column).

A step hands every search [R, V] draws. The built-in samplers read the first few columns
of a row (one per draw, `search.base.draw`), and a compiled step computes only the
columns read; `sbeam` (and a plugin that wants Gumbels) reads one per token.

Each row has a 64-bit key made from its prompt's seed and its index among the prompt's
rows, so a prompt's draws do not depend on its batch-mates or on the batch size. The
draws are computed inside the compiled step (no generator state crosses the graph, so
CUDA graphs can replay it) from integer arithmetic only, so eager and compiled code
produce the same bits on every device.

The hash: a row's draws for (step t, token v) are mix32(((k1 + t * V + v) mod 2**32)
XOR k2), where k1, k2 are the row's two 32-bit words and mix32 is Wellons' "lowbias32"
(bias about 0.17 in his avalanche measure, among the best two-multiply 32-bit hashes
hash-prospector found). Within a row the counter t * V + v never repeats (for 2**32 / V
steps) and mix32 is a bijection, so no draw repeats another of the same row; rows whose
counters overlap are XORed with different k2. Values live in int64 holding 32 bits; no
product overflows.
A draw is the top 23 bits, centred: u in [2**-24, 1 - 2**-24], exact in float32.
A stage or search that draws numbers besides selection's (xtc's chance, npad's noise) reads
the keys of `stream(keys, tag)`, so its draws are not the ones that choose the tokens.
"""
from __future__ import annotations

import hashlib

import torch

M32 = 0xFFFFFFFF


def _mul(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2**32 for 0 <= x, c < 2**32, without an int64 overflow:
    x * c = x * (c - 2**31) + x * 2**31, and x * 2**31 = (x & 1) << 31 (mod 2**32)."""
    if c < 2**31:
        return (x * c) & M32
    return (x * (c - 2**31) + ((x & 1) << 31)) & M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijection of [0, 2**32) with strong avalanche."""
    x = x ^ (x >> 16)
    x = _mul(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_keys(seeds: list[int], rows: int, device) -> torch.Tensor:
    """[len(seeds) * rows, 2] int64: two 32-bit words per row, from (prompt seed, row index)."""
    keys = []
    for s in seeds:
        for j in range(rows):
            d = hashlib.sha256(f"{int(s)}/{j}".encode()).digest()
            keys.append([int.from_bytes(d[:4], "little"), int.from_bytes(d[4:8], "little")])
    return torch.tensor(keys, dtype=torch.int64, device=device)


def uniform(keys: torch.Tensor, t: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, vocab] float32 draws in (0, 1) for step t (a 0-d int64 tensor) of rows `keys`."""
    counter = t * vocab + torch.arange(vocab, device=keys.device)  # distinct per (step, token)
    h = mix32(((keys[:, :1] + counter) & M32) ^ keys[:, 1:])
    return ((h >> 9).to(torch.float32) + 0.5) * 2.0**-23


def stream(keys: torch.Tensor, tag: int) -> torch.Tensor:
    """The rows' keys for draws apart from selection's (xtc's chance, npad's noise): `tag`
    XORed into the second word only. XORed into both words it cancels wherever adding the
    counter carries through none of its bits (at counter 0 always), and the two streams'
    draws are the same numbers."""
    return torch.stack([keys[:, 0], keys[:, 1] ^ tag], 1)
