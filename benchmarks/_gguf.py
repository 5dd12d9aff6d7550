"""Our llama as a GGUF file for llama.cpp's `llama` architecture, f32 or q8_0, written with
the `gguf` package's GGUFWriter (the names, metadata and Q/K row order llama.cpp's own
convert_hf_to_gguf.py gives a transformers llama).

    write_gguf(random_model("24m"), "bench-f32.gguf")          # or qtype="q8_0"

The benchmark checkpoint has random weights and no tokenizer, so the file carries a
placeholder sentencepiece vocabulary of the model's size (<unk>, <s>, </s>, the 256 byte
tokens, then one made-up word per id): llama.cpp needs one to load, and the benchmarks
feed it token ids, never text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

QTYPES = ("f32", "q8_0")


def meta_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """q or k rows from the rotate-half order (ours, transformers') to the interleaved pairs
    llama.cpp's RoPE rotates (convert_hf_to_gguf.py's `permute`): within each head, row i of
    the first half and row i of the second half become rows 2i and 2i + 1."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _float(lin) -> torch.Tensor:
    return (lin.dequantized() if hasattr(lin, "dequantized") else lin.weight).detach().float()


def gguf_tensors(model) -> list[tuple[str, np.ndarray]]:
    """(llama.cpp tensor name, float32 array [out, in]) for every weight of `model`."""
    c = model.config
    out = [("token_embd.weight", model.tok_embeddings.weight), ("output_norm.weight", model.norm.weight),
           ("output.weight", _float(model.output))]
    for i, blk in enumerate(model.layers):
        a, f, p = blk.attention, blk.feed_forward, f"blk.{i}."
        out += [(p + "attn_norm.weight", blk.attention_norm.weight),
                (p + "attn_q.weight", meta_rows(_float(a.wq), c.n_heads)),
                (p + "attn_k.weight", meta_rows(_float(a.wk), c.n_kv_heads)),
                (p + "attn_v.weight", _float(a.wv)), (p + "attn_output.weight", _float(a.wo)),
                (p + "ffn_norm.weight", blk.ffn_norm.weight),
                (p + "ffn_gate.weight", _float(f.w1)), (p + "ffn_up.weight", _float(f.w3)),
                (p + "ffn_down.weight", _float(f.w2))]
    return [(name, t.detach().float().contiguous().numpy()) for name, t in out]


def _vocab(n: int) -> tuple[list[str], list[float], list[int]]:
    import gguf

    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL, *[T.BYTE] * 256]
    tokens += [f"\u2581w{i}" for i in range(len(tokens), n)]
    types += [T.NORMAL] * (n - len(types))
    return tokens[:n], [0.0] * n, [int(t) for t in types[:n]]


def write_gguf(model, path: str | Path, qtype: str = "f32") -> Path:
    """Write `model` (float or int8; int8 weights are written dequantized) as a GGUF file;
    qtype "q8_0" stores every matrix in llama.cpp's q8_0 blocks (32 weights, one fp16
    scale), as `convert_hf_to_gguf.py --outtype q8_0` does; norms stay f32."""
    import gguf

    c = model.config
    if qtype not in QTYPES:
        raise ValueError(f"qtype {qtype!r}: use one of {', '.join(QTYPES)}")
    if c.rope_scaling:
        raise ValueError("rope_scaling is not written by this small converter; use llama.cpp's "
                         "convert_hf_to_gguf.py for such a checkpoint")
    if c.vocab_size < 259:
        raise ValueError(f"vocab_size {c.vocab_size}: the placeholder vocabulary needs at least 259 ids")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.dim)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "q8_0" else gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = _vocab(c.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(c.bos_id if c.bos_id is not None else 1)
    w.add_eos_token_id(c.eos_ids[0])
    w.add_unk_token_id(0)
    for name, arr in gguf_tensors(model):
        if qtype == "q8_0" and arr.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
