"""The shape of a llama-family model: one dataclass every loader fills in."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelError


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

    @property
    def n_params(self) -> int:
        """Weights a `Llama` of this config holds, in closed form (cheap for any claimed size).

            >>> LlamaConfig(vocab_size=32000, dim=288, n_layers=6, n_heads=6, n_kv_heads=6,
            ...             hidden_dim=768).n_params
            24407712
        """
        kv = self.n_kv_heads * self.head_dim
        layer = 2 * self.dim + 2 * self.dim * self.dim + 2 * kv * self.dim \
            + 3 * self.hidden_dim * self.dim
        heads = 1 if self.tie_embeddings else 2
        return self.n_layers * layer + heads * self.vocab_size * self.dim + self.dim


def check_claims(config: LlamaConfig, state: dict, file: Path, keys: dict[str, str],
                 where: Callable[[str], str]) -> None:
    """Raise ModelError when `file`'s claimed sizes do not fit the tensors in `state`.

        >>> check_claims(config, state, Path("params.json"), {"n_layers": "n_layers"}, where)

    Runs before anything is built or looped over at the claimed sizes (a config can claim
    2**30 layers). `keys` maps our field names to the file's (fields missing from it came
    from the tensors); `where(name)` says which tensor of which file `name` is.
    """
    c, key = config, lambda attr: keys.get(attr, attr)  # noqa: E731
    fix = "The config does not belong to these weights: fix it or re-download the checkpoint."
    if c.dim % c.n_heads or c.head_dim % 2 or c.n_heads % c.n_kv_heads:
        raise ModelError(
            f"{file}: {key('dim')}={c.dim}, {key('n_heads')}={c.n_heads} and {key('n_kv_heads')}="
            f"{c.n_kv_heads} are impossible: {key('dim')} must be {key('n_heads')} times an even "
            f"head size, and {key('n_heads')} a multiple of {key('n_kv_heads')}. {fix}")
    found = (re.match(r"layers\.(\d+)\.", k) for k in state)
    layers = 1 + max((int(m[1]) for m in found if m), default=-1)
    if c.n_layers != layers:
        held = f"{layers} layer(s), numbered 0 to {layers - 1}" if layers else "no layer"
        raise ModelError(f"{file}: {key('n_layers')}={c.n_layers}, but the weights hold {held}. "
                         f"{fix}")
    claims = [("tok_embeddings.weight", 0, "vocab_size", c.vocab_size),
              ("tok_embeddings.weight", 1, "dim", c.dim),
              ("layers.0.feed_forward.w1.weight", 0, "hidden_dim", c.hidden_dim),
              ("layers.0.attention.wk.weight", 0, "n_kv_heads", c.n_kv_heads * c.head_dim)]
    for name, axis, attr, want in claims:
        shape = tuple(state[name].shape) if name in state else None
        if shape is not None and (len(shape) != 2 or shape[axis] != want):
            claim = f"{key(attr)}={getattr(c, attr)}"
            if attr == "n_kv_heads":
                claim += f" with {key('n_heads')}={c.n_heads} ({want} rows)"
            raise ModelError(f"{file}: {claim}, but {where(name)} has shape {list(shape)}. {fix}")
