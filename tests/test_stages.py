"""Each logit stage against its transformers 4.55.4 processor, plus the stages without one.

Logits are batched and hold the cases that break naive kernels: ties at the cut, -inf
already present, a row with one finite logit, a peaked row whose other probabilities
underflow to 0, a row of all-equal logits. Equality is exact unless a test says why not.
"""
from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
import torch

from decode.compiler.context import StepContext
from decode.compiler.stages import apply_stage, builtin_names, load_stage, tensor_params

hf = pytest.importorskip("transformers.generation.logits_process")

INF = float("inf")
VOCAB = 64


def make_logits(seed: int, rows: int = 9, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * 3
    x[1] = torch.randint(-3, 4, (vocab,), generator=g).float()          # many ties
    x[2, torch.randperm(vocab, generator=g)[: vocab // 3]] = -INF        # -inf already there
    x[3] = -INF
    x[3, 5] = 1.5                                                         # one finite logit
    x[4, 7] = 120.0                                                       # the rest underflow
    x[5] = x[5].round()                                                   # ties among normals
    x[6] = 0.25                                                           # all equal
    x[7, :4] = x[7].max() + 1                                             # tied maxima
    x[8, torch.randperm(vocab, generator=g)[: vocab // 2]] = -INF
    x[8] = x[8].round()                                                   # ties and -inf
    return x


def history(seed: int, rows: int = 9, length: int = 12, high: int = 6) -> torch.Tensor:
    """Token ids from a small range, so that repeats and repeated n-grams are common."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (rows, length), generator=g)


def same(ours: torch.Tensor, ref: torch.Tensor, atol: float = 0.0) -> None:
    assert ours.shape == ref.shape
    assert torch.equal(torch.isneginf(ours), torch.isneginf(ref)), "different tokens removed"
    finite = ~torch.isneginf(ref)
    if atol == 0.0:
        assert torch.equal(ours[finite], ref[finite])
    else:
        torch.testing.assert_close(ours[finite], ref[finite], atol=atol, rtol=0)


# (stage, our params, reference processor)
WARPERS = [
    *[("temp", {"t": t}, hf.TemperatureLogitsWarper(t)) for t in (0.3, 0.7, 1.0, 1.8)],
    *[
        ("topk", {"k": k, "keep": keep}, hf.TopKLogitsWarper(k, min_tokens_to_keep=keep))
        for k in (1, 3, 10, 64, 100)
        for keep in (1, 5)
    ],
    *[
        ("topp", {"p": p, "keep": keep}, hf.TopPLogitsWarper(p, min_tokens_to_keep=keep))
        for p in (0.05, 0.5, 0.9, 0.95)
        for keep in (1, 3)
    ],
    # top_p=1.0: generate adds no warper (the warper alone drops underflowed tokens)
    *[("topp", {"p": 1.0, "keep": keep}, lambda ids, x: x) for keep in (1, 3)],
    *[
        ("minp", {"p": p, "keep": keep}, hf.MinPLogitsWarper(p, min_tokens_to_keep=keep))
        for p in (0.0, 0.05, 0.2, 0.9, 1.0)
        for keep in (1, 3)
    ],
    *[
        ("typical", {"p": p, "keep": keep}, hf.TypicalLogitsWarper(p, min_tokens_to_keep=keep))
        for p in (0.2, 0.5, 0.9, 0.99)
        for keep in (1, 3)
    ],
    *[
        ("epsilon", {"e": e, "keep": keep}, hf.EpsilonLogitsWarper(e, min_tokens_to_keep=keep))
        for e in (1e-4, 0.01, 0.1, 0.5)
        for keep in (1, 3)
    ],
    *[
        ("eta", {"e": e, "keep": keep}, hf.EtaLogitsWarper(e, min_tokens_to_keep=keep))
        for e in (3e-4, 0.01, 0.1, 0.5)
        for keep in (1, 3)
    ],
    *[("repetition", {"r": r}, hf.RepetitionPenaltyLogitsProcessor(r)) for r in (0.5, 1.0, 1.3, 2.0)],
    *[("norepeat", {"n": n}, hf.NoRepeatNGramLogitsProcessor(n)) for n in (1, 2, 3, 4, 13)],
]


@pytest.mark.parametrize(
    "stage, params, ref", WARPERS, ids=[f"{s}-{'-'.join(map(str, p.values()))}" for s, p, _ in WARPERS]
)
def test_stage_matches_transformers(stage, params, ref):
    for seed in range(3):
        logits = make_logits(seed)
        ids = history(seed)
        before = logits.clone()
        ours = apply_stage(stage, logits, StepContext.from_input_ids(ids), **params)
        assert torch.equal(logits, before), "apply modified its input"
        same(ours, ref(ids, logits.clone()))


@pytest.mark.parametrize("position", [0, 5, 20])
def test_typical_cut_exactly_at_the_mass_matches_transformers(position):
    # p equal to a cumulative sum (a float32 value, so exact as a Python float) pins
    # whether the token that reaches the mass is kept
    logits = make_logits(0)
    logprobs = torch.log_softmax(logits, dim=-1)
    distance = torch.abs(-logprobs - (-(logprobs * logprobs.exp()).nansum(-1, keepdim=True)))
    order = torch.sort(distance).indices
    p = float(logits.gather(-1, order).softmax(-1).cumsum(-1)[0, position])
    ctx = StepContext.from_input_ids(history(0))
    ours = apply_stage("typical", logits, ctx, p=p)
    same(ours, hf.TypicalLogitsWarper(p)(history(0), logits.clone()))
    assert (~ours[0].isneginf()).sum() == position + 1  # the token reaching p is kept


@pytest.mark.parametrize("min_new", [0, 1, 3, 4, 9])
def test_minnew_matches_transformers(min_new):
    ids, logits = history(0), make_logits(0)
    for prompt_len in (4, 8, 12):
        for eos in ([2], [2, 7], []):
            ctx = StepContext.from_input_ids(ids, eos_ids=eos, new_len=ids.shape[1] - prompt_len)
            ref = hf.MinNewTokensLengthLogitsProcessor(prompt_len, min_new, eos)
            same(apply_stage("minnew", logits, ctx, n=min_new), ref(ids, logits.clone()))


def bad_sequences(ids: torch.Tensor) -> list[list[int]]:
    """Sequences that the rows' histories end with (so the ban bites), others that they
    don't, one-token ones, one that is exactly EOS, and one longer than the history."""
    return [
        [3],
        [2],                                   # the EOS id: the reference never bans it alone
        ids[0, -1:].tolist() + [9],
        ids[1, -2:].tolist() + [11],
        ids[2, -3:].tolist() + [3],            # shares its last token with [3]
        [5, 5, 5, 5, 5, 12],
        ids[4].tolist() + [13],                # as long as the history: never matches
        ids[5, -11:].tolist() + [14],
    ]


def test_ban_matches_transformers():
    for seed in range(3):
        ids, logits = history(seed), make_logits(seed)
        bad = bad_sequences(ids)
        ctx = StepContext.from_input_ids(ids, eos_ids=[2])
        ref = hf.NoBadWordsLogitsProcessor(bad, eos_token_id=[2])
        ours = apply_stage("ban", logits, ctx, ids=bad)
        same(ours, ref(ids, logits.clone()))
        assert torch.isneginf(ours[0, 9]) and torch.isneginf(ours[:, 3]).all()


@pytest.mark.parametrize("b", [-2.5, 0.75, 4.0, -INF])
def test_bias_matches_transformers(b):
    for seed in range(3):
        ids, logits = history(seed), make_logits(seed)
        for seq in bad_sequences(ids):
            ctx = StepContext.from_input_ids(ids)
            ref = hf.SequenceBiasLogitsProcessor({tuple(seq): b})
            same(apply_stage("bias", logits, ctx, ids=[seq], b=b), ref(ids, logits.clone()))
        # several sequences in one stage, one bias each; biases landing on one token add up
        seqs = bad_sequences(ids)
        biases = [b, 1.5, -0.5, 2.25, b, 3.0, -1.0, 0.125]
        ref = hf.SequenceBiasLogitsProcessor({tuple(s): x for s, x in zip(seqs, biases)})
        ctx = StepContext.from_input_ids(ids)
        same(apply_stage("bias", logits, ctx, ids=seqs, b=biases), ref(ids, logits.clone()))


def test_bias_given_a_sequence_twice_keeps_its_last_bias():
    prepared = load_stage("bias").prepare({"ids": [[1, 2], [3], [1, 2]], "b": [1.0, 2.0, 5.0]}, None)
    assert prepared == {"ids": ((3,), (1, 2)), "b": [2.0, 5.0]}  # one-token sequences first


def padded_context(rows: list[list[int]], slots: int, new: int, eos=(), max_new=None) -> StepContext:
    """The engine's layout: rows left-padded with garbage, `slots - length` empty slots
    after them, the last `new` filled slots generated; `max_new` the run's `max`."""
    length = max(map(len, rows))
    tokens = torch.full((len(rows), slots), 999_999)  # garbage where not valid
    valid = torch.zeros(len(rows), slots, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, length - len(r): length] = torch.tensor(r)
        valid[i, length - len(r): length] = True
    generated = valid.clone()
    generated[:, : length - new] = False
    return StepContext(tokens, valid, generated, torch.tensor(length), torch.tensor(new),
                       torch.tensor(list(eos), dtype=torch.long),
                       max_new=None if max_new is None else torch.tensor(max_new))


def ragged_rows(seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 5, 9, 1, 12, 7, 3, 10, 6]
    return [torch.randint(0, 6, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize(
    "stage, params, ref",
    [
        ("repetition", {"r": 1.7}, hf.RepetitionPenaltyLogitsProcessor(1.7)),
        ("norepeat", {"n": 2}, hf.NoRepeatNGramLogitsProcessor(2)),
        ("norepeat", {"n": 3}, hf.NoRepeatNGramLogitsProcessor(3)),
        ("ban", {"ids": [[1, 3], [4, 4, 0], [5]]}, hf.NoBadWordsLogitsProcessor([[1, 3], [4, 4, 0], [5]])),
        ("bias", {"ids": [[2, 2, 1]], "b": -3.0}, hf.SequenceBiasLogitsProcessor({(2, 2, 1): -3.0})),
    ],
)
def test_rows_with_different_histories_each_match_their_own_reference(stage, params, ref):
    for seed in range(4):
        rows = ragged_rows(seed)
        logits = make_logits(seed)
        ours = apply_stage(stage, logits, padded_context(rows, slots=16, new=1), **params)
        for i, r in enumerate(rows):
            same(ours[i : i + 1], ref(torch.tensor([r]), logits[i : i + 1].clone()))


def serving_engine_penalties(logits, ctx, p, f):
    """vLLM's definition, one row and one token at a time (presence first, as written)."""
    out = logits.clone()
    for i in range(logits.shape[0]):
        gen = ctx.tokens[i][ctx.generated[i] & ctx.valid[i]].tolist()
        for tok in set(gen):
            out[i, tok] -= p
            out[i, tok] -= f * gen.count(tok)
    return out


@pytest.mark.parametrize("p, f", [(0.5, 0.0), (0.0, 0.3), (1.2, 0.7), (-0.4, -0.1)])
def test_presence_and_frequency_count_generated_tokens_only(p, f):
    rows, logits = ragged_rows(1), make_logits(1)
    ctx = padded_context(rows, slots=16, new=4)
    ours = apply_stage("frequency", apply_stage("presence", logits, ctx, p=p), ctx, f=f)
    same(ours, serving_engine_penalties(logits, ctx, p, f))
    untouched = torch.ones_like(logits, dtype=torch.bool)
    for i, r in enumerate(rows):
        untouched[i, r[-4:]] = False  # only the 4 generated slots may change
    assert torch.equal(ours[untouched], logits[untouched])


def top_n_sigma(row: torch.Tensor, n: float) -> torch.Tensor:
    finite = row[row > -INF].double()
    cut = finite.max() - n * finite.std(unbiased=False)
    return torch.where(row.double() >= cut, row, -INF)


@pytest.mark.parametrize("n", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_topnsigma_keeps_logits_within_n_std_of_the_max_over_finite_logits(n):
    for seed in range(3):
        logits = make_logits(seed)
        ours = apply_stage("topnsigma", logits, StepContext.from_input_ids(history(seed)), n=n)
        for i, row in enumerate(logits):
            if i == 2:  # a row of distinct logits: no float32-vs-float64 doubt at the cut
                same(ours[i], top_n_sigma(row, n))
        assert not torch.isneginf(ours.max(-1).values).any(), "the max always survives"
        assert torch.equal(torch.isneginf(ours[3]), torch.isneginf(logits[3]))  # lone survivor kept


def test_topnsigma_ignores_removed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, -INF, -INF, -INF, -INF]])
    ctx = StepContext.from_input_ids(torch.zeros(1, 1, dtype=torch.long))
    # over the four finite logits sigma = 1.118, so 2 sigma keeps 4, 3 and 2 (> 1.76)
    out = apply_stage("topnsigma", logits, ctx, n=2.0)
    assert out[0, :4].isneginf().tolist() == [False, False, False, True]


def test_temp_zero_leaves_logits_unchanged():
    logits = make_logits(0)
    out = apply_stage("temp", logits, StepContext.from_input_ids(history(0)), t=0.0)
    assert torch.equal(out, logits)


class CharTokenizer:
    def encode(self, text, bos=True):
        return ([1] if bos else []) + [ord(c) - 90 for c in text]


def test_ban_and_bias_encode_their_text_without_bos():
    tok = CharTokenizer()
    assert load_stage("ban").prepare({"words": ["ab", "c", "ab"]}, tok) == {"ids": ((7, 8), (9,))}
    assert load_stage("bias").prepare({"text": "ab", "b": 2.0}, tok) == {"ids": ((7, 8),), "b": 2.0}
    with pytest.raises(ValueError, match="no tokens"):
        load_stage("ban").prepare({"words": [""]}, tok)


def test_ban_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="0..63"):
        apply_stage("ban", make_logits(0), StepContext.from_input_ids(history(0)), ids=[[64]])


def test_every_stage_file_is_a_catalogue_clause_with_a_kernel():
    from pathlib import Path

    import decode.compiler.stages as stages

    files = {p.stem for p in Path(stages.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(builtin_names()) == files
    for name in builtin_names():
        module = load_stage(name)
        assert callable(module.apply) and isinstance(module.STATIC, frozenset)


# One example set of parameters per stage, and a second set with the same structure
# (only tensor-valued params differ), which must not recompile.
SWEEPS = {
    "temp": ({"t": 0.7}, {"t": 1.3}),
    "topk": ({"k": 5}, {"k": 9, "keep": 3}),
    "topp": ({"p": 0.9}, {"p": 0.5}),  # keep is static for topp
    "minp": ({"p": 0.1, "keep": 2}, {"p": 0.3, "keep": 2}),  # keep is static for minp
    "typical": ({"p": 0.9}, {"p": 0.4, "keep": 2}),
    "epsilon": ({"e": 0.01}, {"e": 0.1, "keep": 2}),
    "eta": ({"e": 0.01}, {"e": 0.2, "keep": 2}),
    "topnsigma": ({"n": 1.0}, {"n": 2.5}),
    "repetition": ({"r": 1.3}, {"r": 0.8}),
    "presence": ({"p": 0.5}, {"p": 1.5}),
    "frequency": ({"f": 0.5}, {"f": 0.1}),
    "mirostat": ({"tau": 3.0, "eta": 0.1}, {"tau": 5.0, "eta": 0.3}),
    "norepeat": ({"n": 3}, {"n": 3}),
    "minlen": ({"n": 4}, {"n": 14}),
    "minnew": ({"n": 4}, {"n": 1}),
    "suppress": ({"token_ids": [3, 9]}, {"token_ids": [3, 9]}),
    "suppress_at_start": ({"token_ids": [2, 5]}, {"token_ids": [2, 5], "after_bos": False}),
    "force_bos": ({"token": 4}, {"token": 7}),
    "force_eos": ({}, {}),
    "lengthdecay": ({"start": 1, "factor": 1.5}, {"start": 0, "factor": 0.9}),
    "renormalize": ({}, {}),
    "ban": ({"ids": [[1, 3], [5]]}, {"ids": [[1, 3], [5]]}),
    "bias": ({"ids": [[1, 3]], "b": 2.0}, {"ids": [[1, 3]], "b": -1.0}),
    "cfg": ({"scale": 1.5, "negative": None}, {"scale": 3.0, "negative": "not this"}),
    # gamma and key change the greenlist table, a tensor input (scheme and width are static)
    "watermark": ({"gamma": 0.25, "delta": 2.0, "key": 15485863, "scheme": "lefthash", "width": 1},
                  {"gamma": 0.5, "delta": 0.5, "key": 7, "scheme": "lefthash", "width": 1}),
    "dry": ({"ids": [[3], [1, 2]], "multiplier": 0.8, "base": 1.75, "allowed": 2, "last": 9},
            {"ids": [[3], [1, 2]], "multiplier": 2.0, "base": 1.1, "allowed": 1, "last": 4}),
    "xtc": ({"threshold": 0.1, "probability": 0.5}, {"threshold": 0.3, "probability": 1.0}),
    "dynatemp": ({"t": 0.8, "range": 0.5, "exponent": 1.0}, {"t": 1.2, "range": 0.0, "exponent": 2.0}),
    "mirostat1": ({"tau": 3.0, "eta": 0.1, "m": 20}, {"tau": 5.0, "eta": 0.3, "m": 20}),
    # constraints: the clause's text never reaches the kernel (prepare drops it); the state's
    # bitmask is what varies, random below
    "regex": ({"pattern": "[a-z]+"}, {"pattern": "\\d{4}"}),
    "json": ({"schema": None}, {"schema": '{"type": "integer"}'}),
    "grammar": ({"path": "a.lark"}, {"path": "b.lark"}),
    "choice": ({"options": ("yes", "no")}, {"options": ("a", "b", "c")}),
}


def same_but_ties_at_the_cut(ours: torch.Tensor, ref: torch.Tensor, logits: torch.Tensor) -> None:
    """Compiled topp keeps every token tied with the cut token, where the reference keeps
    those its (unstable) sort puts last; otherwise the same."""
    kept, kept_ref = ~ours.isneginf(), ~ref.isneginf()
    assert bool((kept_ref <= kept).all()), "a token the reference keeps was dropped"
    cut = torch.where(kept_ref, logits, INF).amin(-1, keepdim=True).expand_as(logits)
    assert torch.equal(logits[kept & ~kept_ref], cut[kept & ~kept_ref]), "an extra token not tied at the cut"
    assert torch.equal(ours[kept], logits[kept])


def compiled_matches_eager_without_recompiling(name: str, backend) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    assert name in SWEEPS, f"add two example parameter sets for the new stage {name!r} to SWEEPS"
    module = load_stage(name)
    counter = CompileCounterWithBackend(backend)
    kernel = torch.compile(module.apply, backend=counter, fullgraph=True)
    stateful = hasattr(module, "init")  # then apply takes the state `init` gives after the history
    ctx = padded_context(ragged_rows(0), slots=16, new=3, eos=[2], max_new=4)  # force_eos acts
    if "guide" in getattr(module, "NEEDS", ()):  # cfg reads its unconditional rows' logits
        ctx = replace(ctx, guide=torch.randn(9, VOCAB, generator=torch.Generator().manual_seed(7)))
    for params in SWEEPS[name]:
        if "keep" in inspect.signature(module.apply).parameters:
            params = {"keep": 1, **params}
        if hasattr(module, "prepare"):
            params = module.prepare(params, None)
        if hasattr(module, "tables"):
            params = {**params, **module.tables(params, VOCAB, "cpu")}
        for seed in (0, 1):
            logits = make_logits(seed)
            args = tensor_params(module, params, logits.device)
            if stateful:
                args = {"state": module.init(ctx, logits.shape[-1], **args), **args}
                if "mask" in args["state"]:  # a constraint's allowed tokens, as the host writes them
                    words = args["state"]["mask"]
                    args["state"] = {"mask": torch.randint(-2**31, 2**31 - 1, words.shape, dtype=torch.int32,
                                                           generator=torch.Generator().manual_seed(seed))}
            if name == "topp":  # compiled, ties at the cut all stay: see compiler/stages/topp.py
                same_but_ties_at_the_cut(kernel(logits, ctx, **args), module.apply(logits, ctx, **args), logits)
            else:
                same(kernel(logits, ctx, **args), module.apply(logits, ctx, **args))
    assert counter.frame_count == 1, f"{name}: a parameter change recompiled"


@pytest.mark.parametrize("name", builtin_names())
def test_kernel_traces_as_one_graph_and_a_sweep_reuses_it(name):
    torch._dynamo.reset()
    compiled_matches_eager_without_recompiling(name, "eager")


def test_inductor_compiles_a_kernel_without_recompiling():
    # topp: sort, cumsum, scatter and two tensor params; the rest run under -m slow
    torch._dynamo.reset()
    compiled_matches_eager_without_recompiling("topp", "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("name", builtin_names())
def test_inductor_compiles_every_kernel_without_recompiling(name):
    torch._dynamo.reset()
    compiled_matches_eager_without_recompiling(name, "inductor")


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.95])
def test_topp_fast_path_equals_the_reference_without_sorting(p, monkeypatch):
    """Rows with no tie at the cut and no mass near P skip the sort and still match."""
    from decode.compiler.stages import _nucleus, topp  # _nucleus: how topp finds its cut

    calls = []
    real = _nucleus._by_sort
    monkeypatch.setattr(_nucleus, "_by_sort", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(int(p * 1000))
    fast_batches = 0
    for scale in (0.5, 2.0, 6.0):
        x = torch.randn(6, 4000, generator=g) * scale
        x[:, ::7] = -INF
        ref = hf.TopPLogitsWarper(p)(None, x.clone())
        before = len(calls)
        same(topp.apply(x, None, torch.tensor(p)), ref)
        fast_batches += len(calls) == before
    assert fast_batches >= 2, "the fast path was hardly taken: the test no longer tests it"


def test_compiled_topp_near_one_keeps_what_eager_keeps_even_when_a_later_stage_flattens():
    """`topp P | temp 5`, compiled as the step compiles it, against eager (the reference's
    cut): topp 1 keeps every token, and a P near 1 drops only what eager drops. The
    compiled radix cut used to drop thousands of near-zero tokens (about 1e-7 of the mass),
    which temp 5 then turns into a large share of the distribution."""
    from decode.compiler.stages import temp, topp

    def stages(x, p, t):
        return temp.apply(topp.apply(x, None, p), None, t)

    torch._dynamo.reset()
    step = torch.compile(stages, fullgraph=True, dynamic=False)  # one graph for every case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32000, generator=g) * 2.5
    x[torch.arange(4), torch.tensor([3, 99, 512, 31999])] += torch.tensor([14.0, 18.0, 22.0, 30.0])
    t = torch.tensor(5.0)
    for p in (1.0, 0.9999999, 0.99999, 0.999, 0.9):
        ours, ref = step(x, torch.tensor(p), t), stages(x, torch.tensor(p), t)
        kept, kept_ref = ours.isfinite(), ref.isfinite()
        assert torch.equal(kept, kept_ref), f"p={p}: compiled keeps {kept.sum(-1).tolist()}, " \
                                            f"eager {kept_ref.sum(-1).tolist()}"
        assert torch.equal(ours[kept], ref[kept])
        if p == 1.0:
            assert bool(kept.all()), "topp 1 dropped tokens"
        else:
            assert bool((kept.sum(-1) < 32000).all()), f"p={p}: nothing dropped: the case tests nothing"


def test_compiled_topp_differs_from_the_reference_only_at_ties_and_rounding():
    """Compiled (no sort, no branch): a row equals the processor's unless the reference
    split a tie at the cut or the cut's mass is within rounding (2e-6) of P."""
    from decode.compiler.stages import _nucleus, topp  # _nucleus: how topp finds its cut

    torch._dynamo.reset()
    kernel = torch.compile(topp.apply, fullgraph=True, dynamic=False)
    g = torch.Generator().manual_seed(5)
    rows = differ = 0
    for p in (0.3, 0.9):
        for scale in (0.3, 1.0, 4.0):
            x = torch.randn(8, 4000, generator=g) * scale
            x[:, ::9] = -INF
            x[0] = (x[0] * 4).round() / 4  # many ties
            ref = hf.TopPLogitsWarper(p)(None, x.clone())
            ours = kernel(x, None, torch.tensor(p))
            _, split, close = _nucleus._radix(x, torch.tensor(p))
            for r in range(x.shape[0]):
                rows += 1
                if torch.equal(ours[r].isneginf(), ref[r].isneginf()):
                    continue
                differ += 1
                assert bool(split[r] | close[r]), f"p={p} scale={scale} row {r}: differs with no tie or rounding"
                if not bool(close[r]):
                    same_but_ties_at_the_cut(ours[r:r + 1], ref[r:r + 1], x[r:r + 1])
    assert differ < rows // 4, "most rows differ: the test data is no longer ordinary"
