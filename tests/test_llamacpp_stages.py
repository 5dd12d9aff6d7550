"""The stages from llama.cpp's samplers: `dry`, `xtc`, `dynatemp`, `mirostat1` and the `last=N`
window of `repetition`/`presence`/`frequency` (llama.cpp's penalty_last_n).

Two kinds of evidence per stage: the cases of llama.cpp's tests/test-sampling.cpp with its
expected probabilities, transcribed (`test_llamacpp_*`); and a plain-Python reference
written from llama.cpp's src/llama-sampling.cpp (and the papers), compared with the tensor
kernel on random inputs, rows of different histories included. Then the engine: the stages'
running state through greedy and beam search, the seed that repeats xtc, compiled == eager.
"""
from __future__ import annotations

import math
import random

import pytest
import torch

import decode
from decode.compiler.context import StepContext
from decode.compiler.noise import row_keys, stream, uniform
from decode.compiler.stages import apply_stage, load_stage, tensor_params
from decode.compiler.stages._common import kth_largest, kth_largest_from, top_values
from decode.dsl import RecipeError, parse
from table_model import TableModel

INF = float("inf")


# -- plain-Python references, written from llama.cpp's src/llama-sampling.cpp ----------------

def dry_reference(logits: list[float], history: list[int], multiplier: float, base: float,
                  allowed: int, last_n: int | None, breakers: list[list[int]]) -> list[float]:
    """llama_sampler_dry_apply: the repeat lengths by their definition (llama.cpp finds the same
    numbers with a Z-algorithm)."""
    tokens = history[-last_n:] if last_n else list(history)  # the ring buffer of the last N
    n = len(tokens)
    out = list(logits)
    if n <= allowed:
        return out
    heads: dict[int, list[list[int]]] = {}
    for b in breakers:
        heads.setdefault(b[0], []).append(list(b[1:]))
    limit = n  # step 1: the nearest restart sequence caps every repeat
    for i in range(n):  # i tokens from the end
        longest = -1
        for tail in heads.get(tokens[n - 1 - i], []):
            if longest < len(tail) <= i and all(tail[o] == tokens[n - i + o] for o in range(len(tail))):
                longest = len(tail)
        if longest >= 0:
            limit = i - longest
            break
    if limit < allowed:
        return out
    most: dict[int, int] = {}  # steps 2-3: the longest repeat each next token would extend
    for j in range(n - 1):
        m = 0
        while m <= j and tokens[j - m] == tokens[n - 1 - m]:
            m += 1
        if min(m, limit) >= allowed:
            most[tokens[j + 1]] = max(most.get(tokens[j + 1], 0), min(m, limit))
    top = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    singles = {b[0] for b in breakers if len(b) == 1}
    for tok, length in most.items():  # step 4
        if tok not in singles:
            out[tok] -= multiplier * base ** min(length - allowed, top if top > 0 else length)
    return out


def xtc_reference(probs: list[float], threshold: float) -> set[int]:
    """llama_sample_xtc_apply when its chance fires: the tokens it keeps."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    order = [i for i in order if probs[i] > 0]  # the candidates (earlier stages' -inf left out)
    last = 0
    for pos, i in enumerate(order):
        if probs[i] < threshold:
            break
        last = pos
    return set(order[last:]) if last > 0 else set(order)


def dynatemp_reference(logits: list[float], t: float, delta: float, exponent: float) -> list[float]:
    """llama_sampler_temp_ext_apply over the finite logits (llama.cpp's candidates)."""
    alive = [x for x in logits if x > -INF]
    if delta <= 0 or len(alive) <= 1:
        temp = t if delta <= 0 else None
        if temp is None:
            return list(logits)
    else:
        top = max(alive)
        z = sum(math.exp(x - top) for x in alive)
        h = -sum(math.exp(x - top) / z * math.log(math.exp(x - top) / z) for x in alive if x - top > -700)
        lo, hi = max(0.0, t - delta), t + delta
        temp = lo + (hi - lo) * (h / math.log(len(alive))) ** exponent
    if temp < 1e-20:  # llama.cpp's temp 0: only the (first) most likely token stays (decode: below 1e-20)
        first = logits.index(max(logits))
        return [x if i == first else -INF for i, x in enumerate(logits)]
    return [x / temp for x in logits]


def mirostat1_reference(logits: list[float], mu: float, m: int) -> set[int]:
    """llama_sampler_mirostat_apply up to the draw: the k most likely tokens it keeps."""
    top = max(logits)
    z = sum(math.exp(x - top) for x in logits if x > -INF)
    p = sorted((math.exp(x - top) / z for x in logits if x > -INF), reverse=True)
    num = den = 0.0
    for i in range(min(m - 1, len(p) - 1)):
        ti = math.log((i + 2) / (i + 1))
        num += ti * math.log(p[i] / p[i + 1])
        den += ti * ti
    try:
        s = num / den
        e = s - 1
        k = int((e * 2 ** mu / (1 - len(logits) ** -e)) ** (1 / s))
    except (ZeroDivisionError, OverflowError, ValueError):
        k = 1
    order = sorted((i for i in range(len(logits)) if logits[i] > -INF), key=lambda i: -logits[i])
    return set(order[:max(k, 1)])  # (a token of probability 0 is no choice, kept or not)


def penalties_reference(logits: list[float], accepted: list[int], last_n: int, repeat: float,
                        freq: float, present: float) -> list[float]:
    """llama_sampler_penalties: counts over the ring buffer of the last N accepted tokens."""
    counts: dict[int, int] = {}
    for tok in accepted[-last_n:]:
        counts[tok] = counts.get(tok, 0) + 1
    out = list(logits)
    for tok, c in counts.items():
        out[tok] = out[tok] * repeat if out[tok] <= 0 else out[tok] / repeat
        out[tok] -= c * freq + (c > 0) * present
    return out


# -- helpers ------------------------------------------------------------------------------------

def context(rows: list[list[int]], slots: int | None = None, keys=None) -> StepContext:
    """The engine's layout for histories `rows`: left-padded (garbage), spare slots after."""
    length = max(map(len, rows))
    slots = slots or length + 4
    tokens = torch.full((len(rows), slots), 999)
    valid = torch.zeros(len(rows), slots, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, length - len(r):length] = torch.tensor(r, dtype=torch.long)
        valid[i, length - len(r):length] = True
    return StepContext(tokens, valid, valid.clone(), torch.tensor(length), torch.tensor(length),
                       torch.tensor([], dtype=torch.long), keys=keys)


def probs_of(logits: torch.Tensor) -> list[float]:
    return torch.softmax(logits.double(), -1)[0].tolist()


def log_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


def random_rows(seed: int, n: int = 6, high: int = 5) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(high) for _ in range(rng.randint(1, 14))] for _ in range(n)]


# -- llama.cpp's tests/test-sampling.cpp, transcribed ------------------------------------------

DRY_CASES = [  # probs, last_tokens, expected, multiplier, base, allowed, last_n, breakers
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [[3]]),
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
]


@pytest.mark.parametrize("probs, history, expected, multiplier, base, allowed, last_n, breakers", DRY_CASES)
def test_llamacpp_dry(probs, history, expected, multiplier, base, allowed, last_n, breakers):
    out = apply_stage("dry", log_of(probs), context([history]), ids=breakers, multiplier=multiplier,
                      base=base, allowed=allowed, last=last_n)
    assert probs_of(out) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("threshold, expected", [
    (0.09, [0.1]), (0.19, [0.2, 0.1]), (0.29, [0.3, 0.2, 0.1]),   # "XTC should"
    (0.39, [0.4, 0.3, 0.2, 0.1]),                                   # "XTC should not"
])
def test_llamacpp_xtc(threshold, expected):
    probs = [0.4, 0.3, 0.2, 0.1]
    keys = row_keys([0], 1, "cpu")
    assert float(uniform(stream(keys, load_stage("xtc").STREAM), torch.tensor(4), 1)) <= 0.99  # the chance fires
    out = apply_stage("xtc", log_of(probs), context([[1, 2, 3, 0]], keys=keys), threshold=threshold,
                      probability=0.99)
    kept = sorted((probs[i] for i in range(4) if out[0, i] > -INF), reverse=True)  # llama.cpp: p not renormalised
    assert kept == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("t, expected", [(1.0, [0.1, 0.2, 0.3, 0.4]), (0.0, [0.0, 0.0, 0.0, 1.0])])
def test_llamacpp_temp_ext(t, expected):
    out = apply_stage("dynatemp", log_of([0.1, 0.2, 0.3, 0.4]), context([[0]]), t=t, range=0.0, exponent=1.0)
    assert probs_of(out) == pytest.approx(expected, abs=1e-5)


PENALTY_CASES = [  # probs, last_tokens, expected, repeat, frequency, presence
    ([0.2] * 5, [0], [0, 0.25, 0.25, 0.25, 0.25], 50.0, 0.0, 0.0),
    ([0.2] * 5, [0, 1, 2], [0, 0, 0, 0.5, 0.5], 50.0, 0.0, 0.0),
    ([0.2] * 5, [0, 1, 2, 0, 0], [0, 0, 0, 0.5, 0.5], 50.0, 0.0, 0.0),
    ([0.2] * 5, [0], [0.000011, 0.249997, 0.249997, 0.249997, 0.249997], 1.0, 5.0, 5.0),
    ([0.2] * 5, [0, 1, 2], [0.000023, 0.000023, 0.000023, 0.499966, 0.499966], 1.0, 5.0, 5.0),
    ([0.2] * 5, [0, 1, 2, 0, 0], [0.000000, 0.000023, 0.000023, 0.499977, 0.499977], 1.0, 5.0, 5.0),
]


@pytest.mark.parametrize("probs, history, expected, repeat, freq, present", PENALTY_CASES)
def test_llamacpp_penalties(probs, history, expected, repeat, freq, present):
    # llama.cpp's window holds exactly the accepted tokens (penalty_last_n = their number)
    x, ctx, last = log_of(probs), context([history]), len(history)
    x = apply_stage("repetition", x, ctx, r=repeat, last=last)
    x = apply_stage("frequency", x, ctx, f=freq, last=last)
    x = apply_stage("presence", x, ctx, p=present, last=last)
    assert probs_of(x) == pytest.approx(expected, abs=1e-5)


# -- the references on random inputs ----------------------------------------------------------

def random_logits(seed: int, rows: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * 2
    x[0, torch.randperm(vocab, generator=g)[: vocab // 3]] = -INF  # earlier stages removed some
    return x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("last", [None, 3, 7])
def test_dry_equals_the_reference_on_rows_of_different_histories(seed, last):
    rows = random_rows(seed)
    breakers = [[4], [2, 3]] if seed % 2 else [[1, 0, 1]]
    logits = random_logits(seed, len(rows), 6)
    params = dict(multiplier=0.8, base=1.75, allowed=1 + seed % 3)
    out = apply_stage("dry", logits, context(rows), ids=breakers, last=last, **params)
    for i, r in enumerate(rows):
        ref = dry_reference(logits[i].tolist(), r, last_n=last, breakers=breakers, **params)
        assert out[i].tolist() == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_dry_clamps_the_exponent_as_llamacpp_does():
    history = [0, 1] * 60  # a repeat of 119 tokens: 3**117 is no float32
    out = apply_stage("dry", torch.zeros(1, 3), context([history]), ids=[], multiplier=1e-30, base=3.0,
                      allowed=2, last=None)
    assert out.tolist()[0] == pytest.approx(dry_reference([0.0] * 3, history, 1e-30, 3.0, 2, None, []), rel=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("seed", range(3))
def test_dry_running_state_equals_the_state_recounted_from_the_history(seed):
    """accept, one token at a time, keeps what init finds over the whole history."""
    dry = load_stage("dry")
    rows = random_rows(seed, high=3)
    params = tensor_params(dry, dict(multiplier=1.0, base=1.5, allowed=1, ids=((2,),)), "cpu")
    ctx = context(rows, slots=24)
    state = dry.init(ctx, 3, **params)
    rng = random.Random(seed)
    for _ in range(6):
        tok = torch.tensor([rng.randrange(3) for _ in rows])
        state = dry.accept(state, tok, None, **params)
        rows = [r + [int(t)] for r, t in zip(rows, tok)]
        fresh = dry.init(context(rows, slots=24), 3, **params)
        assert all(torch.equal(state[k], fresh[k]) for k in state)
        x = random_logits(seed, len(rows), 3)
        assert torch.equal(dry.apply(x, None, state, **params), dry.apply(x, None, fresh, **params))


@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.2, 0.35, 0.5])
def test_xtc_equals_the_reference_when_it_fires(threshold):
    logits = random_logits(7, 8, 12) / 1.5
    keys = row_keys(list(range(8)), 1, "cpu")
    out = apply_stage("xtc", logits, context([[0]] * 8, keys=keys), threshold=threshold, probability=1.0)
    for i in range(8):
        kept = {j for j in range(12) if out[i, j] > -INF}
        assert kept == xtc_reference(torch.softmax(logits[i].double(), -1).tolist(), threshold)
        assert torch.equal(out[i][out[i] > -INF], logits[i][out[i] > -INF])


def test_xtc_fires_with_its_probability_on_a_stream_apart_from_selection():
    rows, p = 4000, 0.3
    keys = row_keys(list(range(rows)), 1, "cpu")
    logits = torch.tensor([[2.0, 1.9, -1.0, -2.0]]).expand(rows, -1)
    out = apply_stage("xtc", logits, context([[0]] * rows, keys=keys), threshold=0.1, probability=p)
    fired = out[:, 0].isneginf()
    assert abs(float(fired.float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / rows)
    draws = uniform(keys, torch.tensor(1), 4)[:, 0]  # what selection reads: unrelated to the firing
    assert abs(float(draws[fired].mean()) - 0.5) < 0.03
    assert torch.equal(apply_stage("xtc", logits, context([[0]] * rows), threshold=0.1, probability=1.0), logits)


@pytest.mark.parametrize("t, delta, exponent", [(1.0, 0.5, 1.0), (0.8, 1.0, 2.0), (0.3, 0.3, 0.5), (2.0, 0.0, 1.0)])
def test_dynatemp_equals_the_reference(t, delta, exponent):
    logits = random_logits(3, 5, 16)
    logits[1] = -INF
    logits[1, 3] = 0.5  # one possible token: left alone
    logits[2] = 0.0     # all equal: the hottest temperature
    logits[3, 0] = 90.0  # all but one underflow: the coldest, T - delta (0 argmaxes)
    out = apply_stage("dynatemp", logits, context([[0]] * 5), t=t, range=delta, exponent=exponent)
    for i in range(5):
        ref = dynatemp_reference(logits[i].tolist(), t, delta, exponent)
        assert out[i].tolist() == pytest.approx(ref, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mu", [1.0, 3.0, 6.0, 10.0, 40.0])
@pytest.mark.parametrize("m", [2, 5, 100])
def test_mirostat1_keeps_the_references_top_k(mu, m):
    logits = random_logits(mu.__hash__() % 100 + m, 6, 40)
    stage = load_stage("mirostat1")
    params = tensor_params(stage, dict(tau=mu / 2, eta=0.1, m=m), "cpu")
    state = {"mu": torch.full((6,), mu)}
    out = stage.apply(logits, None, state, **params)
    for i in range(6):
        assert {j for j in range(40) if out[i, j] > -INF} == mirostat1_reference(logits[i].tolist(), mu, m)
    kept = out > -INF
    assert torch.equal(out[kept], logits[kept])  # the kept tokens' values untouched (selection and accept renormalise)


def test_mirostat1_moves_mu_by_the_surprise_of_the_draw_renormalised():
    stage = load_stage("mirostat1")
    params = tensor_params(stage, dict(tau=3.0, eta=0.2, m=10), "cpu")
    state = stage.init(context([[0]] * 3), 30, **params)
    mu = [6.0] * 3
    for step in range(5):
        logits = random_logits(step, 3, 30)
        out = stage.apply(logits, None, state, **params)
        tok = stage.select(out, uniform(row_keys([0, 1, 2], 1, "cpu"), torch.tensor(step), 30))
        for i in range(3):
            kept = mirostat1_reference(logits[i].tolist(), mu[i], 10)
            assert int(tok[i]) in kept
            z = sum(math.exp(float(logits[i, j])) for j in kept)
            mu[i] -= 0.2 * (-math.log2(math.exp(float(logits[i, tok[i]])) / z) - 3.0)
        state = stage.accept(state, tok, out, **params)
        assert state["mu"].tolist() == pytest.approx(mu, rel=1e-5)


@pytest.mark.parametrize("last", [1, 2, 5, 30])
def test_penalty_windows_equal_the_reference_on_rows_of_different_histories(last):
    rows = random_rows(last)
    logits = random_logits(last, len(rows), 5)
    ctx = context(rows)
    x = apply_stage("repetition", logits, ctx, r=1.7, last=last)
    x = apply_stage("frequency", x, ctx, f=0.4, last=last)
    x = apply_stage("presence", x, ctx, p=0.9, last=last)
    for i, r in enumerate(rows):
        ref = penalties_reference(logits[i].tolist(), r, last, 1.7, 0.4, 0.9)
        assert x[i].tolist() == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_presence_and_frequency_windows_count_only_generated_tokens():
    ctx = context([[3, 3, 3, 1, 2]])
    ctx.generated[:, :3] = False  # the prompt is 3, 3, 3: outside what these penalties count
    out = apply_stage("frequency", torch.zeros(1, 5), ctx, f=1.0, last=4)
    assert out.tolist() == [[0.0, -1.0, -1.0, 0.0, 0.0]]


def test_without_last_the_penalties_are_what_they_were():
    rows = random_rows(9)
    logits = random_logits(9, len(rows), 5)
    ctx = context(rows)
    for name, key in (("repetition", "r"), ("frequency", "f"), ("presence", "p")):
        whole = apply_stage(name, logits, ctx, **{key: 1.5, "last": 99})
        assert torch.equal(apply_stage(name, logits, ctx, **{key: 1.5}), whole)


# -- bad input: a caret, the place and the fix --------------------------------------------------

@pytest.mark.parametrize("recipe, bad, words", [
    ("sample | xtc probability=1.5", "probability=1.5", "0 <= probability <= 1"),
    ("sample | xtc threshold=0.7", "threshold=0.7", "never remove anything"),
    ("dry base=1", "base=1", "does not grow with the repeat"),
    ('dry "\\n" ""', '""', "must not be empty"),
    ("repetition 1.3 last=0", "last=0", "leave `last` out"),
    ("frequency 0.5 last=-2", "last=-2", "1 <= last"),
    ("mirostat1 m=1", "m=1", "two tokens"),
    ("dynatemp 0.7", "dynatemp 0.7", "needs RANGE"),
])
def test_meaningless_settings_are_refused_with_a_caret(recipe, bad, words):
    with pytest.raises(RecipeError) as err:
        parse(recipe)
    start = recipe.index(bad)
    assert (err.value.span.start, err.value.span.end) == (start, start + len(bad))
    assert words in err.value.message


def test_transformers_has_no_window_on_its_repetition_penalty():
    from decode.dsl.reference import hf_reference

    assert hf_reference(parse("repetition 1.3")).kwargs is not None
    assert "no window like last=8" in hf_reference(parse("repetition 1.3 last=8")).reason


# -- the engine ------------------------------------------------------------------------------

class DigitTokens:
    """A tokenizer for the bigram model: each digit is its token (so `dry "3"` breaks at 3)."""

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return [int(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(str(int(i)) for i in ids)


@pytest.fixture(scope="module")
def bigram():
    m = TableModel.random(0, scale=1.5)
    m.tokenizer = DigitTokens()
    return m


DRY = 'dry "3" "6" multiplier=3 base=1.5 allowed=1 last=6'  # greedy, the model says 1 5 5 5 ...


def test_greedy_dry_chooses_what_the_reference_says_each_step(bigram):
    prompts = [[0, 1, 0], [1], [3, 5, 6]]
    out = decode.generate(bigram, f"greedy | {DRY} | max 12", prompts, compile=False)
    turned = 0  # steps where DRY changed the argmax
    for prompt, c in zip(prompts, out):
        history = list(prompt)
        for tok in c.sequences[0].ids:
            logits = bigram.table[history[-1]].tolist()
            ref = dry_reference(logits, history, 3.0, 1.5, 1, 6, [[3], [6]])
            assert tok == max(range(8), key=lambda j: ref[j])
            turned += tok != max(range(8), key=lambda j: logits[j])
            history.append(tok)
    assert turned >= 2


def test_beam_dry_state_follows_its_rows(bigram):
    """Each returned hypothesis scores the sum of its tokens' log-probs less DRY's penalty over
    its own history (as in transformers, the processed scores are not renormalised): the state
    moved with the beams that continued."""
    prompts = [[0, 1, 0], [4, 2], [1, 2, 1, 2]]
    out = decode.generate(bigram, 'beam 3 lenpen=0 | dry "3" multiplier=0.3 allowed=1 | max 8', prompts,
                          compile=False)
    penalised = 0
    for prompt, c in zip(prompts, out):
        for s in c.sequences:
            history, score = list(prompt), 0.0
            for tok in s.ids:
                logp = torch.log_softmax(bigram.table[history[-1]], -1).tolist()
                ref = dry_reference(logp, history, 0.3, 1.75, 1, None, [[3]])
                score += ref[tok]
                penalised += ref[tok] != logp[tok]
                history.append(tok)
            assert s.score == pytest.approx(score, abs=1e-4)
    assert penalised >= 3


def test_xtc_repeats_with_the_seed_and_leaves_selection_its_own_draws(bigram):
    recipe = "sample 4 | xtc threshold=0.1 probability={p} | max 10"
    run = lambda p, seed: [[s.ids for s in c.sequences]  # noqa: E731
                           for c in decode.generate(bigram, recipe.format(p=p), [[0], [3]], seed=seed, compile=False)]
    assert run(0.5, 1) == run(0.5, 1)
    assert run(0.5, 1) != run(0.5, 2)
    assert run(0.0, 1) == [[s.ids for s in c.sequences]
                           for c in decode.generate(bigram, "sample 4 | max 10", [[0], [3]], seed=1, compile=False)]


# Compiling costs CPU minutes on a shared machine: the two stages with the most machinery (DRY's
# running state, xtc's own draws) by default, every stage in one step under `pytest -m slow`.
@pytest.mark.parametrize("recipe", [
    f"sample 2 | {DRY} | xtc threshold=0.1 probability=0.5 | max 6",
    pytest.param(f"sample 3 | repetition 1.3 last=3 | frequency 0.2 last=4 | presence 0.3 last=2 | {DRY} | "
                 "xtc threshold=0.1 probability=0.5 | dynatemp 1.0 range=0.5 | mirostat1 tau=2 m=5 | max 10",
                 marks=pytest.mark.slow),
])
def test_compiled_equals_eager(bigram, recipe):
    eager = decode.generate(bigram, recipe, [[0, 1], [5]], seed=4, compile=False)
    compiled = decode.generate(bigram, recipe, [[0, 1], [5]], seed=4, compile=True)
    assert [[s.ids for s in c.sequences] for c in compiled] == [[s.ids for s in c.sequences] for c in eager]
    for a, b in zip(compiled, eager):
        assert [s.score for s in a.sequences] == pytest.approx([s.score for s in b.sequences], abs=1e-4)


# mirostat1's fast paths (_common.py): the same values as the plain computations, eagerly and
# compiled (one inductor graph over both branches of its torch.cond)
def test_top_values_equal_torch_topk_with_ties_and_minus_infinity():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        v, m = int(torch.randint(3000, 20000, (1,), generator=g)), int(torch.randint(2, 30, (1,), generator=g))
        x = torch.randn(3, v, generator=g)
        x = x.round() if trial % 2 else torch.where(x > 1.5, x, -INF)  # ties; mostly -inf
        x[2] = -INF
        x[2, v - 1] = 0.0
        assert torch.equal(top_values(x, m), torch.topk(x, m).values), (v, m)


def test_kth_largest_from_the_top_equals_the_radix_select_compiled_and_eager():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4096, generator=g).round(decimals=1)  # ties at every k
    x[3, 100:] = -INF

    def kth(x, k):
        top = top_values(x, 16)
        return kth_largest_from(x, top, k)

    compiled = torch.compile(kth, backend="inductor", fullgraph=True, dynamic=False)
    for ks in ([1, 5, 16, 3], [1, 17, 2, 4000], [4096, 300, 90, 100], [16, 16, 16, 16]):
        k = torch.tensor(ks)[:, None]
        want = torch.cat([kth_largest(x[i:i + 1], k[i]) for i in range(4)])
        assert torch.equal(kth(x, k), want) and torch.equal(compiled(x, k), want), ks
