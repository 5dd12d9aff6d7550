"""benchmarks/_gguf.py writes our llama in llama.cpp's layout; these pin the two things a
wrong converter gets silently wrong (no gguf or llama.cpp needed: benchmarks/llamacpp.py
checks the whole file against llama.cpp's logits where those are installed)."""
import importlib.util
from pathlib import Path

import torch

from decode.runtime import Llama, LlamaConfig
from decode.runtime.model import rope_inv_freq, rotate_half

spec = importlib.util.spec_from_file_location("_gguf", Path(__file__).resolve().parents[1] / "benchmarks" / "_gguf.py")
_gguf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_gguf)

CFG = LlamaConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96)


def _rope_interleaved(x, pos, inv):
    """ggml's GGML_ROPE_TYPE_NORM (llama.cpp's llama): dims 2i and 2i + 1 rotate together."""
    a = pos[:, None].float() * inv
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x0 * a.cos() - x1 * a.sin(), x0 * a.sin() + x1 * a.cos()
    return out


def _rope_half(x, pos, inv):
    a = torch.cat([pos[:, None].float() * inv] * 2, dim=-1)
    return x * a.cos() + rotate_half(x) * a.sin()


def test_q_and_k_rows_reordered_for_llama_cpp_rope_give_our_rotated_vectors_reordered():
    torch.manual_seed(0)
    m = Llama(CFG)
    inv, hd = rope_inv_freq(CFG), CFG.head_dim
    x, pos = torch.randn(7, CFG.dim), torch.arange(3, 10)
    for w, heads in ((m.layers[0].attention.wq.weight, CFG.n_heads), (m.layers[0].attention.wk.weight, CFG.n_kv_heads)):
        ours = _rope_half((x @ w.T).view(7, heads, hd).transpose(0, 1), pos, inv)          # [heads, T, hd]
        theirs = _rope_interleaved((x @ _gguf.meta_rows(w, heads).T).view(7, heads, hd).transpose(0, 1), pos, inv)
        # the same vectors, each head's dims in llama.cpp's order (0, hd/2, 1, hd/2 + 1, ...),
        # so every attention score q . k is the same
        order = torch.stack([torch.arange(hd // 2), torch.arange(hd // 2) + hd // 2], dim=1).flatten()
        torch.testing.assert_close(theirs, ours[..., order])
    q = m.layers[0].attention.wq.weight
    assert not torch.equal(_gguf.meta_rows(q, CFG.n_heads), q)


def test_every_weight_is_written_once_under_llama_cpp_names_and_shapes():
    m = Llama(CFG)
    got = dict(_gguf.gguf_tensors(m))
    assert len(got) == 3 + 9 * CFG.n_layers == sum(1 for _ in m.state_dict())
    kv = CFG.n_kv_heads * CFG.head_dim
    assert got["token_embd.weight"].shape == got["output.weight"].shape == (CFG.vocab_size, CFG.dim)
    assert got["blk.1.attn_k.weight"].shape == (kv, CFG.dim)
    assert got["blk.1.ffn_down.weight"].shape == (CFG.dim, CFG.hidden_dim)
    assert (got["blk.0.ffn_gate.weight"] == m.layers[0].feed_forward.w1.weight.detach().numpy()).all()
    assert (got["blk.0.ffn_up.weight"] == m.layers[0].feed_forward.w3.weight.detach().numpy()).all()
