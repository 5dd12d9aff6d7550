"""HF llama directories: config.json (+ generation_config.json) and safetensors or .bin weights."""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from .config import LlamaConfig
from .errors import ModelError

SUPPORTED = ("llama", "mistral")
_NAMES = [  # HF name pattern -> our name
    (r"model\.embed_tokens\.weight", "tok_embeddings.weight"),
    (r"model\.norm\.weight", "norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", r"layers.\1.attention.w\2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"layers.\1.feed_forward.w1.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"layers.\1.feed_forward.w2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"layers.\1.feed_forward.w3.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
]


def read(folder: Path):
    """(config, state dict in our names, where) for an HF directory."""
    cfg = _json(folder / "config.json")
    config = to_config(cfg, folder / "config.json")
    gen_file = folder / "generation_config.json"  # what transformers' generate() uses
    gen = _json(gen_file) if gen_file.exists() else {}
    config.bos_id = gen.get("bos_token_id", cfg.get("bos_token_id"))
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    config.eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    config.pad_id = gen.get("pad_token_id", cfg.get("pad_token_id"))
    state, origin = {}, {}
    for file in weight_files(folder):
        for name, tensor in read_weights(file).items():
            ours = our_name(name)
            if ours is not None:
                state[ours], origin[ours] = tensor, f"tensor {name!r} in {file}"
    hf_name = {ours: theirs for theirs, ours in ((t, our_name(t)) for t in hf_names(config))}

    def where(ours):
        return origin.get(ours) or f"tensor {hf_name.get(ours, ours)!r} of {folder}"
    return config, state, where


def to_config(cfg: dict, file: Path) -> LlamaConfig:
    kind = cfg.get("model_type")
    if kind not in SUPPORTED:
        raise ModelError(
            f"{file} says model_type={kind!r} ({', '.join(cfg.get('architectures') or [])}); only "
            f"llama-family models ({', '.join(SUPPORTED)}) are supported. Pass a llama checkpoint.")
    problems = []
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={cfg['hidden_act']!r} (needs silu)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        problems.append("attention_bias/mlp_bias (needs none)")
    dim, heads = cfg.get("hidden_size", 0), cfg.get("num_attention_heads", 1)
    if cfg.get("head_dim") not in (None, dim // heads):
        problems.append(f"head_dim={cfg['head_dim']} (needs hidden_size/num_attention_heads)")
    if kind == "mistral" and cfg.get("sliding_window") not in (None, 0) \
            and cfg["sliding_window"] < cfg.get("max_position_embeddings", 0):
        problems.append(f"sliding_window={cfg['sliding_window']} (needs none)")
    if problems:
        raise ModelError(f"{file} describes an unsupported architecture: {'; '.join(problems)}. "
                         f"Only plain llama/mistral decoders are supported.")
    try:
        return _llama_config(cfg, dim, heads)
    except KeyError as e:
        raise ModelError(f"{file} lacks the key {e}; it is not a complete llama config. "
                         f"Re-download it.") from None


def _llama_config(cfg: dict, dim: int, heads: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=cfg["vocab_size"], dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, hidden_dim=cfg["intermediate_size"],
        norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_theta=cfg.get("rope_theta", 10000.0),
        rope_scaling=cfg.get("rope_scaling"), max_seq_len=cfg.get("max_position_embeddings", 2048),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)))


def weight_files(folder: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            names = sorted(set(_json(folder / index)["weight_map"].values()))
            for n in names:
                if not (folder / n).exists():
                    raise ModelError(f"{folder / n} is listed in {folder / index} but missing. "
                                     f"Download all shards of the checkpoint.")
            return [folder / n for n in names]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).exists():
            return [folder / single]
    raise ModelError(f"{folder} has a config.json but no weights: expected model.safetensors, "
                     f"model.safetensors.index.json with its shards, or pytorch_model.bin.")


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(file))
        except Exception as e:  # SafetensorError is not importable by a stable name
            raise ModelError(f"{file} is corrupt or truncated ({e}). Re-download it; compare "
                             f"its size with the one the model hub lists.") from None
    try:
        return torch.load(file, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(file))  # mmap needs the zip format
    except pickle.UnpicklingError:
        why = "it holds Python objects besides tensors, and unpickling those could run code"
    except Exception as e:
        why = str(e).splitlines()[0][:200]
    raise ModelError(f"{file} could not be read as a plain tensor file: {why}. Only "
                     f"weights-only checkpoints are loaded (no pickled code); convert it to "
                     f"safetensors with a trusted tool, or re-download it.")

def our_name(hf_name: str) -> str | None:
    for pattern, ours in _NAMES:
        if re.fullmatch(pattern, hf_name):
            return re.sub(pattern, ours, hf_name)
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None  # recomputed from the config
    return hf_name  # unknown: `build` reports it


def hf_names(config: LlamaConfig):
    """Every weight name a transformers llama checkpoint of this config holds."""
    yield from ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        yield from (p + f"self_attn.{x}_proj.weight" for x in "qkvo")
        yield from (p + f"mlp.{x}_proj.weight" for x in ("gate", "down", "up"))
        yield from (p + "input_layernorm.weight", p + "post_attention_layernorm.weight")


def _json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{file} could not be read as JSON ({e}). Re-download it.") from None
