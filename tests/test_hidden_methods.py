"""Issue 23's methods that read hidden states, against brute force on a table model that has
them (each token a hidden vector, logits its output head's): `cluster C`, `npad sigma=S` and
`diverse ... kind=embedding`, each re-implemented here as plain Python over lists and numpy,
must give the same sequences and scores. Then: compiled == eager with the numbers as tensors
(a sweep reuses the step), the noise is standard normal and seeded, and a model without
hidden states is one message naming the clause.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import decode
from decode.runtime.errors import ModelError
from table_model import TableModel
from test_diversity_methods import compiled_equals_eager_and_reuses_the_step, plain_beam
from test_variants import EOS, PROMPT, V, assert_same, group_beam, ours

D = 5  # hidden size of the table model


class HiddenTable(TableModel):
    """A bigram model with hidden states: token x has the hidden state H[x] [D]; the logits
    after x are output(H[x]) (`output` a linear head with a bias), so `table` is exact and
    noise added to H[x] before the head changes them as it would a llama's."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        hid, head, bias = torch.randn(V, D, generator=g), torch.randn(V, D, generator=g), torch.zeros(V)
        bias[EOS] = 0.8  # some beams end early
        super().__init__(hid @ head.T + bias, eos=EOS)
        self.hid = torch.nn.Parameter(hid, requires_grad=False)
        self.output = torch.nn.Linear(D, V)
        self.output.weight.data, self.output.bias.data = head, bias
        self.output.requires_grad_(False)

    def _out(self, h, hidden, before_head):
        logits = self.output(h if before_head is None else before_head(h))
        return (logits, h) if hidden else logits

    def prefill(self, cache, tokens, pad, exits=(), hidden=False, before_head=None):
        return self._out(self.hid[tokens][:, -1], hidden, before_head)  # a strided slice, as a llama's

    def decode(self, cache, tokens, slot, pad, exits=(), hidden=False, before_head=None):
        return self._out(self.hid[tokens], hidden, before_head)


def unit(x):
    return x / np.linalg.norm(x)


def vector(model, parent_last, tok):
    return unit(model.hid[parent_last].double().numpy()) + unit(model.output.weight[tok].double().numpy())


def kmeans(x, c, iters=10):
    """The catalogue's k-means, written out: farthest-point start from the first, Lloyd steps."""
    centres = [x[0]]
    for _ in range(c - 1):
        d = [min(((p - q) ** 2).sum() for q in centres) for p in x]
        centres.append(x[int(np.argmax(d))])
    centres = np.array(centres)
    for _ in range(iters + 1):
        near = [int(np.argmin([((p - q) ** 2).sum() for q in centres])) for p in x]
        for j in range(c):
            members = [p for p, a in zip(x, near) if a == j]
            if members:
                centres[j] = np.mean(members, axis=0)
    return near


def cluster(model, k, c):
    def keep(t, cands):
        top = sorted(cands, key=lambda x: -x[0])[:2 * k]
        near = kmeans([vector(model, (PROMPT + x[1][:-1])[-1], x[1][-1]) for x in top], c)
        rank = [sum(near[j] == near[i] for j in range(i)) for i in range(len(top))]
        first = [near.index(near[i]) for i in range(len(top))]
        return [top[i] for i in sorted(range(len(top)), key=lambda i: (top[i][0] == -math.inf, rank[i], first[i]))]
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k,c", [(2, 2), (3, 2), (3, 4), (4, 3)])
def test_cluster_matches_the_plain_reference(k, c, seed):
    model = HiddenTable(seed)
    recipe = f"beam {k} | cluster {c} | max 5"
    assert_same(ours(model, recipe), plain_beam(model, k, 5, cluster(model, k, c)), recipe)


def test_cluster_1_is_beam_search_and_the_reference_can_tell():
    model = HiddenTable(1)
    assert ours(model, "beam 3 | cluster 1 | max 5") == ours(model, "beam 3 | max 5")
    best = lambda t, x: sorted(x, key=lambda c: -c[0])  # noqa: E731
    assert any(plain_beam(HiddenTable(s), 3, 5, cluster(HiddenTable(s), 3, 3)) != plain_beam(HiddenTable(s), 3, 5, best)
               for s in range(3))


# -- npad ---------------------------------------------------------------------------------

def npad_rows(model, k, max_new, sigma, seed, minnew=0):
    """Cho's NPAD written out: k decoders that never meet; decoder j (the prompt's row j) at
    step t takes the argmax of the head of H[last] + sigma/(t+1)·z, z its own normal draws at
    step t (EOS banned while t < minnew), and scores the token by the noise-free log-probs
    log_softmax(head(H[last])), the recipe's stages left out; the k results, best first (a
    tie keeps row order)."""
    from decode.compiler.noise import row_keys
    from decode.compiler.search._hidden import gaussian

    keys, w, b = row_keys([seed], k, "cpu"), model.output.weight.double(), model.output.bias.double()
    out = []
    for j in range(k):
        hist, score = [], 0.0
        for t in range(max_new):
            h = model.hid[(PROMPT + hist)[-1]].double()
            noisy = (w @ (h + sigma / (t + 1) * gaussian(keys, torch.tensor(t), D)[j].double()) + b).tolist()
            if t < minnew:
                noisy[EOS] = -math.inf
            tok = int(np.argmax(noisy))
            hist, score = hist + [tok], score + torch.log_softmax(w @ h + b, -1)[tok].item()
            if tok == EOS:
                break
        out.append((score, hist))
    return sorted(out, key=lambda x: -x[0])


def noisy(model, recipe, seed, compile=False):
    out = decode.generate(model, recipe, [PROMPT], seeds=[seed], compile=compile)[0]
    return [(s.score, s.ids) for s in out.sequences]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k,sigma", [(2, 0.5), (3, 1.5), (4, 3.0)])
def test_npad_is_k_independent_noisy_greedy_decoders_ranked_by_the_clean_score(k, sigma, seed):
    model = HiddenTable(seed)
    recipe = f"beam {k} | npad sigma={sigma} | max 5"
    assert_same(noisy(model, recipe, 40 + seed), npad_rows(model, k, 5, sigma, 40 + seed), recipe)


def test_npad_stages_act_on_the_noisy_logits_and_the_score_stays_the_models():
    """`minnew 2` bans EOS from the noisy choice at the first two steps; the score is still
    the model's log-prob of the tokens (not renormalised over what the stage left)."""
    model = HiddenTable(1)
    recipe = "beam 4 | npad sigma=1.5 | minnew 2 | max 5"
    got, want = noisy(model, recipe, 5), npad_rows(model, 4, 5, 1.5, 5, minnew=2)
    assert_same(got, want, recipe)
    assert want != npad_rows(model, 4, 5, 1.5, 5)  # the stage mattered here
    # --logprobs: `raw` (the model's, noise-free) sums to the score; `processed` is the noisy choice's
    out = decode.generate(model, recipe, [PROMPT], seeds=[5], compile=False, logprobs=2)[0]
    for s in out.sequences:
        assert s.score == pytest.approx(sum(t.raw for t in s.logprobs), abs=1e-5)
        assert s.score != pytest.approx(sum(t.processed for t in s.logprobs), abs=1e-2)


def test_npad_return_keeps_the_best_of_the_k():
    model = HiddenTable(2)
    got = noisy(model, "beam 4 return=2 | npad sigma=2 | max 5", 9)
    assert_same(got, npad_rows(model, 4, 5, 2.0, 9)[:2], "return=2")


def test_npad_warns_that_lenpen_and_early_change_nothing():
    (w,) = decode.parse("beam 4 lenpen=0.6 | npad sigma=1").warnings
    assert "lenpen and early change nothing" in w.message
    assert decode.parse("beam 4 early=true | npad sigma=1").warnings
    assert not decode.parse("beam 4 | npad sigma=1").warnings


def test_npad_sigma_0_is_k_copies_of_greedy_and_the_noise_is_seeded():
    model = HiddenTable(0)
    greedy = decode.generate(model, "greedy | max 5", [PROMPT] * 3, compile=False)  # 3 rows: the same matmuls
    assert noisy(model, "beam 3 | npad sigma=0 | max 5", 7) == [(c.sequences[0].score, c.sequences[0].ids) for c in greedy]
    runs = [noisy(model, "beam 3 | npad sigma=3 | max 5", s) for s in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1] and any(r != runs[0] for r in runs[2:])
    assert any(len({tuple(ids) for _, ids in r}) > 1 for r in runs)  # the decoders part ways


def test_npad_noise_is_standard_normal_per_row_and_step():
    from decode.compiler.noise import row_keys
    from decode.compiler.search._hidden import gaussian

    z = torch.cat([gaussian(row_keys([s], 4, "cpu"), torch.tensor(t), 256) for s in range(20) for t in range(5)])
    assert z.shape == (400, 256)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01  # 102400 draws: sd of the mean 0.003
    assert abs(float((z.abs() < 1.96).double().mean()) - 0.95) < 0.005    # the shape, not only two moments
    assert abs(float(torch.corrcoef(torch.stack([z[0::2].flatten(), z[1::2].flatten()]))[0, 1])) < 0.01
    # one row's noise at consecutive steps, and one prompt's rows against another prompt's, are
    # independent too: noise repeated across steps, or shared by the beams or the prompts,
    # would move every beam alike and add no diversity
    by = z.view(20, 5, 4, 256)
    for a, b in ((by[:, :-1], by[:, 1:]), (by[:, :, :2], by[:, :, 2:]), (by[:-1], by[1:])):
        assert abs(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])) < 0.01


def test_npad_noise_is_not_made_of_the_selection_draws():
    """Under sampling (`beam K | npad | topp P`) the selection reads uniform(keys, t', V) at
    step t'; the noise's uniforms must come from another stream, or the Gaussians of steps
    0..V/2d-1 would be the selection's step-0 draws and a sampled token would hang on the
    noise (Box-Muller of those very draws: correlation 1)."""
    from decode.compiler.noise import row_keys, uniform
    from decode.compiler.search._hidden import gaussian

    keys, d, v = row_keys(list(range(50)), 4, "cpu"), 64, 1024
    sel = uniform(keys, torch.tensor(0), v).double()
    for t in range(v // (2 * d)):
        u = sel[:, 2 * d * t:2 * d * (t + 1)]
        same = torch.sqrt(-2 * torch.log(u[:, :d])) * torch.cos(2 * math.pi * u[:, d:])
        z = gaussian(keys, torch.tensor(t), d).double()
        assert abs(float(torch.corrcoef(torch.stack([z.flatten(), same.flatten()]))[0, 1])) < 0.04, t  # sd 0.009


# -- diverse kind=embedding ------------------------------------------------------------------

def embedding(model, lam):
    def pen(g, t, hist, v, past):
        mine = vector(model, (PROMPT + hist)[-1], v)
        cos = [float(mine @ (x := vector(model, (PROMPT + row[:-1])[-1], row[-1]))) / np.linalg.norm(mine) / np.linalg.norm(x)
               for e in range(g) if not past["done_before"][e] for row in past["rows"][e]]
        return lam * max(cos) if cos else 0.0
    return pen


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k,groups,lam", [(2, 2, 0.7), (4, 2, 2.0), (6, 3, 1.5)])
def test_embedding_diversity_matches_the_plain_reference(k, groups, lam, seed):
    model = HiddenTable(seed)
    recipe = f"beam {k} | diverse groups={groups} penalty={lam} kind=embedding | max 5"
    assert_same(ours(model, recipe), group_beam(model, k, groups, 5, embedding(model, lam)), recipe)


def test_embedding_reference_can_tell_it_from_hamming():
    from test_variants import hamming

    assert any(group_beam(HiddenTable(s), 4, 2, 5, embedding(HiddenTable(s), 2.0))
               != group_beam(HiddenTable(s), 4, 2, 5, hamming(2.0)) for s in range(3))


# -- compiled == eager, numbers as tensors; bad input ------------------------------------------

SWEEPS = [  # the table model's prefill gives a strided slice of states, as a llama's does
    ("beam 4 | diverse groups=2 penalty={} kind=embedding | max 5", (0.5, 2.0)),
    ("beam 3 | npad sigma={} | max 5", (0.5, 2.0)),
    pytest.param("beam 3 | npad sigma={} | topk 4 | max 5", (0.5, 2.0), marks=pytest.mark.slow),  # draws
    pytest.param("beam 3 | cluster 3 | topk {} | max 5", (5, 6), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("recipe,values", SWEEPS)
def test_compiled_equals_eager_and_a_sweep_reuses_the_step(recipe, values):
    compiled_equals_eager_and_reuses_the_step(HiddenTable(2), recipe, values)


@pytest.mark.parametrize("recipe,name", [
    ("beam 4 | cluster 2 | max 3", "cluster"),
    ("beam 4 | npad sigma=0.5 | max 3", "npad"),
    ("beam 4 | diverse groups=2 penalty=1 kind=embedding | max 3", "diverse kind=embedding"),
])
def test_a_model_without_hidden_states_is_one_message_naming_the_clause(recipe, name):
    model = TableModel.random(0, size=7)
    with pytest.raises(ModelError, match=f"'{name}' reads the rows' hidden states, which this model "
                                                r"\(TableModel\) does not give"):
        decode.generate(model, recipe, [PROMPT], seed=0, compile=False)
