"""The static KV cache: in-place beam reorder, and a decode step that compiles fullgraph."""
import torch

from decode.runtime import KVCache, Llama, LlamaConfig

CONFIG = LlamaConfig(vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48)


def model():
    torch.manual_seed(0)
    return Llama(CONFIG).eval().requires_grad_(False)


def prefilled(m, rows=3, max_len=16):
    tokens = torch.randint(0, 61, (rows, 6), generator=torch.Generator().manual_seed(1))
    pad = torch.tensor([0, 2, 5][:rows])
    cache = m.new_cache(rows, max_len)
    m.prefill(cache, tokens, pad)
    return cache, pad


def test_new_cache_is_preallocated_zero_with_the_weights_dtype():
    cache = model().new_cache(rows=3, max_len=16)
    assert isinstance(cache, KVCache) and (cache.rows, cache.max_len) == (3, 16)
    assert cache.k.shape == (2, 3, 2, 16, 8) and cache.k.dtype == torch.float32
    assert not cache.k.any() and not cache.v.any()


def test_reorder_permutes_rows_in_place_so_decoding_follows_the_new_rows():
    m = model()
    cache, pad = prefilled(m)
    k_before, storage = cache.k.clone(), cache.k0.data_ptr()
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    assert cache.k0.data_ptr() == storage
    assert torch.equal(cache.k, k_before[:, index]) and torch.equal(cache.k[:, 1], cache.k[:, 2])
    fresh, _ = prefilled(m)
    tok, slot = torch.tensor([7, 7, 7]), torch.tensor(6)
    want = m.decode(fresh, tok, slot, pad)[index]
    assert (m.decode(cache, tok, slot, pad[index]) - want).abs().max() < 1e-6


def test_decode_compiles_fullgraph_and_matches_eager_without_recompiling():
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # other tests compiled too
    m = model()
    eager_cache, pad = prefilled(m)
    compiled_cache, _ = prefilled(m)
    step = torch.compile(m.decode, fullgraph=True, dynamic=False, backend="aot_eager")
    index = torch.tensor([1, 2, 0])
    with torch._dynamo.config.patch(error_on_recompile=False):
        for s in range(6, 10):
            tok = torch.tensor([s, s + 1, s + 2])
            want = m.decode(eager_cache, tok, torch.tensor(s), pad)
            got = step(compiled_cache, tok, torch.tensor(s), pad)
            assert (got - want).abs().max() < 1e-5
            torch.compile(KVCache.reorder, fullgraph=True, backend="aot_eager")(compiled_cache, index)
            eager_cache.reorder(index)
            pad = pad[index]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs <= 2


def test_following_parent_pointers_decodes_exactly_as_copying_the_rows():
    # beam search moves rows every step: by pointers (follow) nothing but `home` moves,
    # and the logits are those of copying the rows (reorder), step after step
    m = model()
    copied, pad = prefilled(m)
    pointed, _ = prefilled(m)
    k_before = pointed.k.clone()
    pads = pad
    for s, index in zip(range(6, 10), ([2, 0, 0], [1, 1, 2], [0, 2, 1], [2, 2, 2])):
        index = torch.tensor(index)
        copied.reorder(index)
        pointed.follow(index)
        pads = pads[index]
        tok = torch.tensor([s, s + 1, s + 2])
        want = m.decode(copied, tok, torch.tensor(s), pads)
        got = m.decode(pointed.followed(), tok, torch.tensor(s), pads)
        assert torch.equal(got, want)
    assert torch.equal(pointed.k[:, :, :, :6], k_before[:, :, :, :6])  # the prompts' slots never moved
    assert not torch.equal(pointed.home, torch.arange(3)[:, None].expand(3, 16))


def test_a_wrong_pointer_changes_the_logits():
    # the pointers are read: a row sent to another row's history decodes differently
    m = model()
    cache, pad = prefilled(m)
    tok, slot = torch.tensor([7, 7, 7]), torch.tensor(6)
    base = m.decode(cache.followed(), tok, slot, pad)
    cache, pad = prefilled(m)
    cache.home[0, 3] = 1
    assert not torch.allclose(m.decode(cache.followed(), tok, slot, pad)[0], base[0])
