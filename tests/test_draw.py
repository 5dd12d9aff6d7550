"""`search.base.draw`: sampling without replacement by inverse CDF over chunk masses."""
from __future__ import annotations

import math

import torch

from decode.compiler.search.draw import CHUNK, draw

T = 40000


def _uniforms(rows: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, n, generator=g).clamp(2**-24, 1 - 2**-24)


def _chi2(counts: torch.Tensor, p: torch.Tensor, total: int) -> tuple[float, int]:
    keep = p > 0
    expected = p[keep] * total
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


def test_first_and_second_draws_follow_successive_sampling():
    """Draw 1 ~ softmax; draw 2 ~ sum_i p_i p_j / (1 - p_i): without replacement, over
    several chunks (N = 600 > CHUNK), impossible (-inf) entries never drawn."""
    torch.manual_seed(0)
    n_items = 600
    s = torch.randn(n_items) * 2
    s[5:300] = float("-inf")
    idx = draw(s.expand(T, n_items).contiguous(), _uniforms(T, 2, 1))
    assert n_items > CHUNK and (idx[:, 0] != idx[:, 1]).all()
    p = torch.softmax(s.double(), 0)
    q = (p[:, None] * p[None, :] / (1 - p[:, None])).fill_diagonal_(0).sum(0)
    for j, want in ((0, p), (1, q)):
        counts = torch.bincount(idx[:, j], minlength=n_items).double()
        assert counts[5:300].sum() == 0
        chi2, dof = _chi2(counts, want, T)
        assert chi2 < dof + 5 * math.sqrt(2 * dof), f"draw {j + 1}: chi2 {chi2:.0f} over {dof} dof"


def test_far_below_the_best_is_still_drawn_in_proportion():
    """Scores 800 below the best underflow any weight taken relative to the best; the draw
    renormalises to what is left, so after the best, -800 comes before -801 with odds e:1."""
    s = torch.full((T, 1000), float("-inf"))
    s[:, 0], s[:, 500], s[:, 999], s[:, 3] = 0.0, -800.0, -801.0, -1000.0
    idx = draw(s, _uniforms(T, 4, 2))
    assert (idx[:, 0] == 0).all() and (idx[:, 3] == 3).all()
    share = float((idx[:, 1] == 500).double().mean())
    assert abs(share - 1 / (1 + math.exp(-1))) < 4 * math.sqrt(0.2 / T)


def test_when_nothing_possible_is_left_the_lowest_free_indices_fill_in():
    s = torch.full((2, 50), float("-inf"))
    s[:, 7] = 0.0
    assert draw(s, _uniforms(2, 4, 3)).tolist() == [[7, 0, 1, 2]] * 2


def test_a_vocabulary_that_is_not_a_multiple_of_the_chunk():
    s = torch.full((T, CHUNK + 3), float("-inf"))
    s[:, -1], s[:, 1] = 0.0, math.log(3.0)  # the padded chunk holds the last entry
    idx = draw(s, _uniforms(T, 2, 4))
    assert set(idx.flatten().tolist()) == {1, CHUNK + 2}
    share = float((idx[:, 0] == 1).double().mean())
    assert abs(share - 0.75) < 4 * math.sqrt(0.1875 / T)
