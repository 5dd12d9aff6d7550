"""HF llama directories: config.json (+ generation_config.json) and safetensors or .bin weights."""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from . import schema
from .config import LlamaConfig, check_claims
from .errors import ModelError
from .schema import read_json, validate

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


# Our LlamaConfig fields -> config.json keys, for messages about claimed sizes.
KEYS = {"vocab_size": "vocab_size", "dim": "hidden_size", "n_layers": "num_hidden_layers",
        "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
        "hidden_dim": "intermediate_size"}


def read(folder: Path):
    """(config, state dict in our names, where) for an HF directory."""
    cfg_file = folder / "config.json"
    cfg = read_json(cfg_file, schema.HF_CONFIG)
    config = to_config(cfg, cfg_file)
    gen_file = folder / "generation_config.json"  # what transformers' generate() uses
    gen = read_json(gen_file, schema.GENERATION_CONFIG) if gen_file.exists() else {}
    _special_ids(config, gen, gen_file, cfg, cfg_file)
    state, origin = {}, {}
    files, index = weight_files(folder)
    for file in files:
        tensors = read_weights(file)
        _check_shard(file, tensors, index)
        for name, tensor in tensors.items():
            ours = our_name(name)
            if ours is not None:
                state[ours], origin[ours] = tensor, f"tensor {name!r} in {file}"

    def where(ours):
        if ours in origin:
            return origin[ours]
        theirs = next((t for t in hf_names(config) if our_name(t) == ours), ours)
        return f"tensor {theirs!r} of {folder}"
    check_claims(config, state, cfg_file, KEYS, where)  # before anything loops over n_layers
    return config, state, where


def _special_ids(config: LlamaConfig, gen: dict, gen_file: Path, cfg: dict, cfg_file: Path):
    """BOS/EOS/PAD from generation_config.json, else config.json; each within the vocabulary."""
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        file, ids = (gen_file, gen[key]) if gen.get(key) is not None else (cfg_file, cfg.get(key))
        ids = [] if ids is None else ids if isinstance(ids, list) else [ids]
        ids = [i for i in ids if i >= 0]  # early llama configs say pad_token_id -1 for "none"
        bad = [i for i in ids if i >= config.vocab_size]
        if bad:
            raise ModelError(f"{file}: key {key!r} is {bad[0]}, outside the vocabulary (ids 0.."
                             f"{config.vocab_size - 1}, vocab_size in {cfg_file}). The file "
                             f"belongs to another model: fix the key or re-download it.")
        if key == "eos_token_id":
            config.eos_ids = tuple(ids)
        else:
            setattr(config, key.replace("_token", ""), ids[0] if ids else None)


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
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, dim // heads):
        problems.append(f"head_dim={cfg['head_dim']} (needs hidden_size/num_attention_heads)")
    if kind == "mistral" and cfg.get("sliding_window") not in (None, 0) \
            and cfg["sliding_window"] < cfg.get("max_position_embeddings", 0):
        problems.append(f"sliding_window={cfg['sliding_window']} (needs none)")
    if problems:
        raise ModelError(f"{file} describes an unsupported architecture: {'; '.join(problems)}. "
                         f"Only plain llama/mistral decoders are supported.")
    scaling = cfg.get("rope_scaling")
    if scaling is not None:
        validate(scaling, schema.ROPE_TYPE, file, prefix="rope_scaling.")
        rope = scaling.get("rope_type", scaling.get("type", "default"))
        validate(scaling, schema.ROPE_SCALING.get(rope, {}), file, prefix="rope_scaling.")
    return _llama_config(cfg, dim, heads)


def _llama_config(cfg: dict, dim: int, heads: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=cfg["vocab_size"], dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, hidden_dim=cfg["intermediate_size"],
        # null counts as absent (the schema let it through); set values are positive
        norm_eps=cfg.get("rms_norm_eps") or 1e-6, rope_theta=cfg.get("rope_theta") or 10000.0,
        rope_scaling=cfg.get("rope_scaling"),
        max_seq_len=cfg.get("max_position_embeddings") or 2048,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)))


def weight_files(folder: Path) -> tuple[list[Path], tuple[Path, dict] | None]:
    """The weight files of `folder`, and (index file, its weight_map) when sharded."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            weight_map = read_json(folder / index, schema.INDEX)["weight_map"]
            names = sorted(set(weight_map.values()))
            for n in names:
                if not (folder / n).exists():
                    raise ModelError(f"{folder / n} is listed in {folder / index} but missing. "
                                     f"Download all shards of the checkpoint.")
            return [folder / n for n in names], (folder / index, weight_map)
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).exists():
            return [folder / single], None
    raise ModelError(f"{folder} has a config.json but no weights: expected model.safetensors, "
                     f"model.safetensors.index.json with its shards, or pytorch_model.bin.")


def _check_shard(file: Path, tensors: dict, index: tuple[Path, dict] | None) -> None:
    """Every tensor the index places in `file` must be there."""
    if index is None:
        return
    index_file, weight_map = index
    lost = [n for n, f in weight_map.items() if f == file.name and n not in tensors]
    if lost:
        raise ModelError(f"{index_file} places tensor {lost[0]!r} in {file}, but that file does "
                         f"not hold it ({len(lost)} tensor(s) missing in all): the shard is "
                         f"incomplete or from another download. Re-download the checkpoint.")


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(file))
        except Exception as e:  # SafetensorError is not importable by a stable name
            raise ModelError(f"{file} is corrupt or truncated ({e}). Re-download it; compare "
                             f"its size with the one the model hub lists.") from None
    try:
        return _named_tensors(file, torch.load(file, map_location="cpu", weights_only=True,
                                               mmap=zipfile.is_zipfile(file)))  # mmap: zip only
    except ModelError:
        raise
    except pickle.UnpicklingError:
        why = "it holds Python objects besides tensors, and unpickling those could run code"
    except Exception as e:
        why = str(e).splitlines()[0][:200]
    raise ModelError(f"{file} could not be read as a plain tensor file: {why}. Only "
                     f"weights-only checkpoints are loaded (no pickled code); convert it to "
                     f"safetensors with a trusted tool, or re-download it.")


def _named_tensors(file: Path, obj) -> dict[str, torch.Tensor]:
    """`obj` when it is a state dict (names -> tensors), else a ModelError naming the file."""
    if isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                     for k, v in obj.items()):
        return obj
    what = "a dict that is not tensor names -> tensors" if isinstance(obj, dict) \
        else f"a {type(obj).__name__}"
    raise ModelError(f"{file} holds {what}, not a state dict. Save the weights with "
                     f"torch.save(model.state_dict(), ...) or pass the original checkpoint.")


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
