"""Logits parity of decode.runtime's Llama with transformers 4.55.4 LlamaForCausalLM (fp32)."""
import pytest
import torch

from llama_factory import make_hf_llama

transformers = pytest.importorskip("transformers")
from decode.runtime import load  # noqa: E402

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
CHECKPOINTS = {  # head_dim 8: the llama3 case has high, medium and low frequency pairs
    "mha-untied": dict(heads=4, kv_heads=4),
    "gqa-tied": dict(heads=4, kv_heads=2, tie=True),
    "mqa-theta500k": dict(heads=4, kv_heads=1, rope_theta=500000.0, layers=3),
    "llama3-scaling": dict(heads=4, kv_heads=2, rope_scaling=LLAMA3_SCALING),
    "vocab101-1layer": dict(vocab=101, layers=1, heads=2, kv_heads=2),
    "wide-gqa4": dict(dim=64, heads=8, kv_heads=2, ff=96, layers=2, tie=True, seed=3),
}
TOL = 1e-5


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def pair(request, tmp_path_factory):
    """(ours, transformers') loaded from the same random HF checkpoint."""
    d = make_hf_llama(tmp_path_factory.mktemp(request.param), **CHECKPOINTS[request.param])
    hf = transformers.LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    return load(d, device="cpu"), hf


def prompt(seed, length, vocab):
    return torch.randint(3, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_full_forward_matches_transformers(pair):
    ours, hf = pair
    ids = torch.cat([prompt(1, 9, ours.config.vocab_size), prompt(2, 9, ours.config.vocab_size)])
    assert (ours(ids) - hf(ids).logits).abs().max() < TOL


@torch.no_grad()
def test_prefill_and_20_cached_steps_match_transformers(pair):
    ours, hf = pair
    ids = prompt(3, 7, ours.config.vocab_size)
    nxt = prompt(4, 20, ours.config.vocab_size)[0]
    out = hf(ids, use_cache=True)
    cache, pad = ours.new_cache(1, 32), torch.zeros(1, dtype=torch.long)
    assert (ours.prefill(cache, ids, pad, all_logits=True) - out.logits).abs().max() < TOL
    past = out.past_key_values
    for step, tok in enumerate(nxt):
        out = hf(tok.view(1, 1), past_key_values=past, use_cache=True)
        past = out.past_key_values
        mine = ours.decode(cache, tok.view(1), torch.tensor(7 + step), pad)
        assert (mine - out.logits[:, -1]).abs().max() < TOL, f"step {step}"


@torch.no_grad()
def test_left_padded_batch_gives_each_prompt_its_own_logits(pair):
    ours, _ = pair
    V = ours.config.vocab_size
    prompts = [prompt(10 + i, n, V)[0] for i, n in enumerate((5, 1, 8))]
    T = max(len(p) for p in prompts)
    pad = torch.tensor([T - len(p) for p in prompts])
    tokens = torch.stack([torch.cat([torch.zeros(T - len(p), dtype=torch.long), p]) for p in prompts])
    steps = torch.randint(3, V, (3, 4), generator=torch.Generator().manual_seed(0))
    cache = ours.new_cache(3, 16)
    batch = [ours.prefill(cache, tokens, pad)]
    batch += [ours.decode(cache, steps[:, s], torch.tensor(T + s), pad) for s in range(4)]
    for r, p in enumerate(prompts):
        alone_cache, zero = ours.new_cache(1, 16), torch.zeros(1, dtype=torch.long)
        alone = [ours.prefill(alone_cache, p[None], zero)]
        alone += [ours.decode(alone_cache, steps[r, s].view(1), torch.tensor(len(p) + s), zero)
                  for s in range(4)]
        for s in range(5):
            assert (batch[s][r] - alone[s][0]).abs().max() < TOL, f"row {r} step {s}"
