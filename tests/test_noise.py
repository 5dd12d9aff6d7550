"""The counter-based draws behind sampling (compiler/noise.py)."""
from __future__ import annotations

import math

import torch

from decode.compiler.noise import mix32, row_keys, stream, uniform


def test_mix32_is_the_reference_lowbias32():
    def lowbias32(x: int) -> int:  # Wellons' C, with explicit 32-bit wrap-around
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1] + torch.randint(0, 2**32, (500,)).tolist()
    assert mix32(torch.tensor(xs)).tolist() == [lowbias32(x) for x in xs]


def ks_uniform(u: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance of the sample from uniform(0, 1)."""
    s = torch.sort(u.double().flatten()).values
    n = s.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - s).max().item(), (s - (i - 1) / n).max().item())


def test_draws_are_uniform_and_uncorrelated():
    keys = row_keys([3, 4], 8, "cpu")                       # 16 rows
    steps = torch.stack([uniform(keys, torch.tensor(t), 4096) for t in range(8)])  # [T, R, V]
    assert steps.min() > 0 and steps.max() < 1
    n = steps.numel()
    assert ks_uniform(steps) < 1.63 / math.sqrt(n)           # p = 0.01
    z = (steps - 0.5) * math.sqrt(12)

    def corr(a, b):
        return (a * b).mean().item()

    bound = 4 / math.sqrt(z[..., 1:].numel())               # ~4 sigma
    assert abs(corr(z[..., 1:], z[..., :-1])) < bound        # neighbouring tokens
    assert abs(corr(z[:, 1:], z[:, :-1])) < bound            # neighbouring rows
    assert abs(corr(z[1:], z[:-1])) < bound                  # consecutive steps
    # no row or step repeats another, shifted or not: the number of distinct values is
    # what n independent draws from 2**23 values give (a repeated row would lose 4096)
    n, bins = steps.numel(), 2**23
    assert torch.unique(steps).numel() > bins * -math.expm1(-n / bins) - 1500


def test_a_rows_draws_depend_on_its_seed_and_index_only():
    a = row_keys([11, 12, 13], 4, "cpu")
    b = row_keys([12], 4, "cpu")
    assert torch.equal(a[4:8], b)
    t = torch.tensor(5)
    assert torch.equal(uniform(a, t, 100)[4:8], uniform(b, t, 100))
    assert not torch.equal(uniform(a, t, 100), uniform(a, t + 1, 100))


def test_compiled_draws_equal_eager_draws():
    keys = row_keys([7], 3, "cpu")
    f = torch.compile(lambda k, t: uniform(k, t, 1000), fullgraph=True, dynamic=False)
    for t in (0, 1, 63):
        assert torch.equal(f(keys, torch.tensor(t)), uniform(keys, torch.tensor(t), 1000))


def test_a_stream_draws_apart_from_selection():
    """xtc's chance and npad's noise read `stream(keys, tag)`: their draws meet selection's
    no more than chance has them, and do not correlate with them. XORing the tag into both
    words of the key (what both once did) gives selection's very draws at counter 0, and
    correlated ones wherever adding the counter carries through none of the tag's bits."""
    keys, tag, v = row_keys(list(range(1000)), 4, "cpu"), 0x58544321, 512
    for t in range(4):
        sel = uniform(keys, torch.tensor(t), v).double()
        ours = uniform(stream(keys, tag), torch.tensor(t), v).double()
        assert float((ours == sel).double().mean()) < 1e-5  # 23-bit draws: chance meets are ~1e-7
        assert abs(float(torch.corrcoef(torch.stack([ours.flatten(), sel.flatten()]))[0, 1])) < 0.01  # sd 0.0007
    both = uniform(keys ^ tag, torch.tensor(0), 1)[:, 0]
    assert torch.equal(both, uniform(keys, torch.tensor(0), v)[:, 0])  # the test can fail
