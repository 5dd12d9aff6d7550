"""Meta llama directories: params.json + consolidated.NN.pth (model-parallel shards)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from . import schema
from .config import LlamaConfig, check_claims
from .errors import ModelError
from .hf import read_weights
from .schema import read_json

KEYS = {"dim": "dim", "n_layers": "n_layers", "n_heads": "n_heads", "n_kv_heads": "n_kv_heads"}

# How Meta's model-parallel layers split a weight across shards (the concat dim).
_COLUMN = ("wq", "wk", "wv", "w1", "w3", "output")  # split on output rows: dim 0
_ROW = ("wo", "w2")                                   # split on input columns: dim 1


def read(folder: Path):
    """(config, state dict in our names, where) for a Meta directory."""
    params = read_json(folder / "params.json", schema.META_PARAMS)
    shards = sorted(folder.glob("consolidated.*.pth"))
    if not shards:
        raise ModelError(f"{folder} has params.json but no consolidated.00.pth: download the "
                         f"weights into the same directory.")
    parts = [read_weights(f) for f in shards]
    _check_shards(shards, parts)
    state = {k: _merge(k, [p[k] for p in parts], params["dim"], folder) for k in parts[0]}
    state.pop("rope.freqs", None)  # Meta stores the rotary table; we recompute it
    config = to_config(params, state)

    def where(name):
        return f"tensor {name!r} in {shards[0] if len(shards) == 1 else folder}"
    check_claims(config, state, folder / "params.json", KEYS, where)  # before the loop below
    for key, w in state.items():
        if key.endswith(("attention.wq.weight", "attention.wk.weight")):
            heads = config.n_heads if ".wq." in key else config.n_kv_heads
            if tuple(w.shape) == (heads * config.head_dim, config.dim):  # else `build` says so
                state[key] = permute_meta_qk(w, heads)
    return config, state, where


def _check_shards(shards: list[Path], parts: list[dict]) -> None:
    """Model-parallel shards hold the same tensor names; name the first one a shard lacks."""
    for shard, part in zip(shards[1:], parts[1:]):
        lost = sorted(set(parts[0]) ^ set(part))
        if lost:
            has, lacks = (shards[0], shard) if lost[0] in parts[0] else (shard, shards[0])
            raise ModelError(f"{lacks} lacks tensor {lost[0]!r}, which {has} holds: the shards "
                             f"come from different downloads or one is incomplete. "
                             f"Re-download the checkpoint.")


def to_config(params: dict, state: dict) -> LlamaConfig:
    try:
        emb, w1 = state["tok_embeddings.weight"], state["layers.0.feed_forward.w1.weight"]
    except KeyError as e:
        raise ModelError(f"The consolidated.*.pth files lack {e}: not a Meta llama checkpoint. "
                         f"Pass the directory of a Meta llama download.") from None
    scaled = params.get("use_scaled_rope", False)
    theta = params.get("rope_theta") or 10000.0  # null counts as absent
    return LlamaConfig(
        vocab_size=emb.shape[0], dim=params["dim"], n_layers=params["n_layers"],
        n_heads=params["n_heads"], n_kv_heads=params.get("n_kv_heads") or params["n_heads"],
        hidden_dim=w1.shape[0], norm_eps=params.get("norm_eps") or 1e-5, rope_theta=theta,
        rope_scaling=_llama3_scaling(params) if scaled else None,
        max_seq_len=params.get("max_seq_len") or _released_context(scaled, theta),
        tie_embeddings="output.weight" not in state, bos_id=None, eos_ids=(), pad_id=None)


def _released_context(scaled: bool, theta: float) -> int:
    # params.json has no context length: llama-3.1+ (scaled rope), llama-3, llama-2.
    return 131072 if scaled else 8192 if theta >= 5e5 else 4096


def _llama3_scaling(params: dict) -> dict:
    return {"rope_type": "llama3", "factor": params.get("rope_scaling_factor") or 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}


def _merge(name: str, parts: list[torch.Tensor], dim: int, folder: Path) -> torch.Tensor:
    if len(parts) == 1 or parts[0].dim() == 1:
        return parts[0]  # one shard, or a replicated norm
    kind = name.split(".")[-2]
    if kind == "tok_embeddings":  # llama-2 splits the embedding dim, llama-3 the vocab
        axis = 1 if parts[0].shape[1] != dim else 0
    else:
        axis = 1 if kind in _ROW else 0
    try:
        return torch.cat(parts, dim=axis)
    except RuntimeError:
        raise ModelError(f"tensor {name!r} has shapes {[list(p.shape) for p in parts]} in the "
                         f"consolidated.*.pth shards of {folder}, which do not join: the shards "
                         f"come from different models. Re-download the checkpoint.") from None


def permute_meta_qk(w: Tensor, n_heads: int) -> Tensor:
    """Meta's interleaved-pair rotary layout -> HF rotate-half layout (rows of wq or wk)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
