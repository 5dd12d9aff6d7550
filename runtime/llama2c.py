"""karpathy/llama2.c `.bin` checkpoints: the legacy header and the version-1 ("ak42") format.

Both store float32 weights in Meta's layout (interleaved rotary pairs), layer by layer per
kind. Legacy: 7 int32 (dim, hidden, layers, heads, kv_heads, vocab, seq_len; vocab < 0
means an untied classifier), weights, then RoPE tables. Version 1: magic, version, the same
7 ints, a shared-classifier byte, zero padding to 256 bytes, then weights (norms first).
"""
from __future__ import annotations

import struct
from dataclasses import replace
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


# The header's seven int32 fields, as llama2.c's Config names them, and our names for them.
FIELDS = {"dim": "dim", "hidden_dim": "hidden_dim", "n_layers": "n_layers", "n_heads": "n_heads",
          "n_kv_heads": "n_kv_heads", "vocab_size": "vocab_size", "seq_len": "max_seq_len"}


def read(path: Path):
    """(config, state dict in our names, where) for a llama2.c .bin file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(256)
    config, offset, legacy = _header(path, head, size)
    _check_size(path, size, config, offset, legacy)  # before reading a byte of weights
    data = bytearray(path.read_bytes())
    names = _order(config, legacy)
    shapes = _shapes(config)
    state = {}
    for name in names:
        n = _numel(shapes[name])
        t = torch.frombuffer(data, dtype=torch.float32, offset=offset, count=n)
        offset += 4 * n
        if not name.startswith("freqs_"):
            state[name] = t.view(shapes[name])
    for i in range(config.n_layers):
        for w, h in (("wq", config.n_heads), ("wk", config.n_kv_heads)):
            key = f"layers.{i}.attention.{w}.weight"
            state[key] = permute_meta_qk(state[key], h)
    return config, state, lambda name: f"tensor {name!r} in {path}"


def _header(path: Path, head: bytes, size: int) -> tuple[LlamaConfig, int, bool]:
    """(config, offset of the first weight, legacy?) from the header, every field checked."""
    fix = "it is not a llama2.c checkpoint or it is corrupt. Re-export or re-download it."
    (magic,) = struct.unpack_from("I", head, 0) if len(head) >= 4 else (None,)
    legacy = magic != MAGIC
    if len(head) < (28 if legacy else 256):
        raise ModelError(f"{path} is {size} bytes, too short for a llama2.c header. "
                         f"Re-export or re-download it.")
    if not legacy:
        (version,) = struct.unpack_from("i", head, 4)
        if version != 1:
            raise ModelError(f"{path} is llama2.c format version {version}; only the float32 "
                             f"formats (legacy and version 1) are supported. Re-export it with "
                             f"export.py --version 1.")
    ints = struct.unpack_from("7i", head, 0 if legacy else 8)
    fields = dict(zip(FIELDS, ints))
    shared = fields["vocab_size"] > 0 if legacy else bool(head[36])  # legacy: < 0 means untied
    fields["vocab_size"] = abs(fields["vocab_size"])
    for name, value in fields.items():
        if value <= 0:
            raise ModelError(f"{path}: header field {name} is {value}, expected a positive "
                             f"integer; {fix}")
    dim, heads, kv = fields["dim"], fields["n_heads"], fields["n_kv_heads"]
    if dim % heads or (dim // heads) % 2 or heads % kv:
        raise ModelError(f"{path}: header fields dim={dim}, n_heads={heads}, n_kv_heads={kv} "
                         f"are impossible (dim must be n_heads times an even head size, and "
                         f"n_heads a multiple of n_kv_heads); {fix}")
    config = LlamaConfig(**{FIELDS[k]: v for k, v in fields.items()}, tie_embeddings=shared,
                         bos_id=None, eos_ids=(), pad_id=None)
    return config, 28 if legacy else 256, legacy


def _file_bytes(c: LlamaConfig, offset: int, legacy: bool) -> int:
    """The size a file with this header has: header, float32 weights (+ legacy RoPE tables)."""
    rope = 2 * c.max_seq_len * (c.head_dim // 2) if legacy else 0
    return offset + 4 * (c.n_params + rope)


def _check_size(path: Path, size: int, config: LlamaConfig, offset: int, legacy: bool) -> None:
    """The header's sizes must add up to the file's size; when one field alone is off, name it."""
    need = _file_bytes(config, offset, legacy)
    if need == size:
        return
    for name, attr in FIELDS.items():
        fits = _fitting_value(config, attr, size, offset, legacy)
        if fits is not None:
            raise ModelError(
                f"{path}: its header claims {name}={getattr(config, attr)}, which needs a file "
                f"of {need} bytes, but the file is {size} bytes, which holds {name}={fits} (the "
                f"other header fields as claimed). The header is corrupt: re-export or "
                f"re-download the file.")
    raise ModelError(f"{path} is {size} bytes but its header (dim={config.dim}, n_layers="
                     f"{config.n_layers}, vocab_size={config.vocab_size}, seq_len="
                     f"{config.max_seq_len}) implies {need}: the file is truncated or corrupt. "
                     f"Re-export or re-download it.")


def _fitting_value(config: LlamaConfig, attr: str, size: int, offset: int, legacy: bool):
    """The value of `attr` (others kept) that makes the file exactly `size` bytes, if any.

    The size grows with each field but n_heads, so a bisection finds the largest value
    that fits; it explains the file only when it fits exactly.
    """
    if attr == "n_heads" or (attr == "max_seq_len" and not legacy):
        return None  # n_heads shrinks the size; seq_len is not stored in version 1
    bytes_at = lambda v: _file_bytes(replace(config, **{attr: v}), offset, legacy)  # noqa: E731
    lo, hi = 0, getattr(config, attr)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if bytes_at(mid) <= size else (lo, mid - 1)
    return lo if lo > 0 and bytes_at(lo) == size else None


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
