"""The shape of a llama-family model: one dataclass every loader fills in."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LlamaConfig:
    """Hyper-parameters of a llama decoder, named as in Meta's `params.json`.

        >>> LlamaConfig(vocab_size=32000, dim=288, n_layers=6, n_heads=6, n_kv_heads=6,
        ...             hidden_dim=768).head_dim
        48

    `rope_scaling` is the HF dict (`{"rope_type": "llama3", "factor": 8.0, ...}`) or None.
    `max_seq_len` is the model's context; `eos_ids` may hold several ids (llama-3 chat).
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    bos_id: int | None = 1
    eos_ids: tuple[int, ...] = (2,)
    pad_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads
