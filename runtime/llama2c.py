"""karpathy/llama2.c `.bin` checkpoints: the legacy header and the version-1 ("ak42") format.

Both store float32 weights in Meta's layout (interleaved rotary pairs), layer by layer per
kind. Legacy: 7 int32 (dim, hidden, layers, heads, kv_heads, vocab, seq_len; vocab < 0
means an untied classifier), weights, then RoPE tables. Version 1: magic, version, the same
7 ints, a shared-classifier byte, zero padding to 256 bytes, then weights (norms first).
"""
from __future__ import annotations

import struct
from pathlib import Path

import torch

from .config import LlamaConfig
from .errors import ModelError
from .meta import permute_meta_qk

MAGIC = 0x616B3432  # "ak42"


def looks_like(path: Path) -> bool:
    """A .bin that is not a zip/pickle (those are PyTorch files)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return path.suffix == ".bin" and head[:2] != b"PK" and head[:1] != b"\x80"


def read(path: Path):
    """(config, state dict in our names, where) for a llama2.c .bin file."""
    data = bytearray(path.read_bytes())
    if len(data) < 28:
        raise ModelError(f"{path} is {len(data)} bytes, too short for a llama2.c header. "
                         f"Re-export or re-download it.")
    (magic,) = struct.unpack_from("I", data, 0)
    if magic == MAGIC:
        (version,) = struct.unpack_from("i", data, 4)
        if version != 1:
            raise ModelError(f"{path} is llama2.c format version {version}; only the float32 "
                             f"formats (legacy and version 1) are supported. Re-export it with "
                             f"export.py --version 1.")
        dim, hidden, layers, heads, kv, vocab, seq = struct.unpack_from("7i", data, 8)
        shared, offset = bool(data[36]), 256
    else:
        dim, hidden, layers, heads, kv, vocab, seq = struct.unpack_from("7i", data, 0)
        shared, vocab, offset = vocab > 0, abs(vocab), 28
    if min(dim, hidden, layers, heads, kv, vocab, seq) <= 0 or dim % heads:
        raise ModelError(f"{path} has an impossible llama2.c header (dim={dim}, heads={heads}, "
                         f"vocab={vocab}); it is not a llama2.c checkpoint or it is corrupt.")
    config = LlamaConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                         hidden_dim=hidden, max_seq_len=seq, tie_embeddings=shared,
                         bos_id=None, eos_ids=(), pad_id=None)
    names = _order(config, legacy=magic != MAGIC)
    shapes = _shapes(config)
    sizes = [_numel(shapes[n]) for n in names]
    need = offset + 4 * sum(sizes)
    if len(data) != need:
        raise ModelError(f"{path} is {len(data)} bytes but its header (dim={dim}, layers={layers}, "
                         f"vocab={vocab}, seq_len={seq}) implies {need}: the file is truncated or "
                         f"corrupt. Re-export or re-download it.")
    state = {}
    for name, n in zip(names, sizes):
        t = torch.frombuffer(data, dtype=torch.float32, offset=offset, count=n)
        offset += 4 * n
        if not name.startswith("freqs_"):
            state[name] = t.view(shapes[name])
    for i in range(layers):
        for w, h in (("wq", heads), ("wk", kv)):
            key = f"layers.{i}.attention.{w}.weight"
            state[key] = permute_meta_qk(state[key], h)
    return config, state, lambda name: f"tensor {name!r} in {path}"


def _order(c: LlamaConfig, legacy: bool) -> list[str]:
    per = lambda part: [f"layers.{i}.{part}.weight" for i in range(c.n_layers)]  # noqa: E731
    att = [*per("attention.wq"), *per("attention.wk"), *per("attention.wv"), *per("attention.wo")]
    ffn = [*per("feed_forward.w1"), *per("feed_forward.w2"), *per("feed_forward.w3")]
    head = [] if c.tie_embeddings else ["output.weight"]
    if legacy:
        return ["tok_embeddings.weight", *per("attention_norm"), *att, *per("ffn_norm"), *ffn,
                "norm.weight", "freqs_cos", "freqs_sin", *head]
    return [*per("attention_norm"), *per("ffn_norm"), "norm.weight", "tok_embeddings.weight",
            *att, *ffn, *head]


def _shapes(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    kvd, s = c.n_kv_heads * c.head_dim, {}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        s.update({p + "attention_norm.weight": (c.dim,), p + "ffn_norm.weight": (c.dim,),
                  p + "attention.wq.weight": (c.dim, c.dim),
                  p + "attention.wk.weight": (kvd, c.dim),
                  p + "attention.wv.weight": (kvd, c.dim),
                  p + "attention.wo.weight": (c.dim, c.dim),
                  p + "feed_forward.w1.weight": (c.hidden_dim, c.dim),
                  p + "feed_forward.w2.weight": (c.dim, c.hidden_dim),
                  p + "feed_forward.w3.weight": (c.hidden_dim, c.dim)})
    s.update({"tok_embeddings.weight": (c.vocab_size, c.dim), "norm.weight": (c.dim,),
              "output.weight": (c.vocab_size, c.dim),
              "freqs_cos": (c.max_seq_len, c.head_dim // 2),
              "freqs_sin": (c.max_seq_len, c.head_dim // 2)})
    return s


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
