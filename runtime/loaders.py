"""`load(path)`: find out what kind of checkpoint `path` is, read it, build a `Llama`.

Formats live in hf.py, meta.py and llama2c.py; each turns its files into a `LlamaConfig`
and a state dict in our names (Meta names, HF rotate-half q/k layout). This module checks
that state dict against the config, moves it to the device/dtype and finds the tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from . import hub, identity
from .config import LlamaConfig
from .errors import ModelError
from .chat import find_template
from .model import Llama, rope_inv_freq
from .quant import check_kernel, quantize_int8_
from .tokenizer import HFTokenizer, SentencePieceTokenizer

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_DRAFT_DIR = Path(__file__).parent / "demo_draft"  # a 2-layer model that drafts for it
FORMATS = ("an HF llama directory (config.json + model.safetensors), a Meta directory "
           "(params.json + consolidated.00.pth) or a llama2.c .bin file")

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "f32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "f16": torch.float16,
}
_QUANT = ("int8", "i8")  # weight-only int8 (quant.py)


def load(path: str | Path | None = None, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None) -> Llama:
    """Load a llama checkpoint; None gives the bundled demo model.

        >>> m = load("ckpt/llama-hf", device="cpu", dtype="bf16")
        >>> logits = m(torch.tensor([m.tokenizer.encode("ROMEO:")]))   # [1, T, vocab]

    device: None -> "cuda" when available, else "cpu". dtype: None -> float32 on CPU,
    bfloat16 on CUDA; or a torch dtype, or "fp32"/"bf16"/"fp16"/"float32"/...; or "int8":
    weight-only int8 linears (quant.py), everything else in the device's default dtype.
    """
    from . import hf, llama2c, meta

    origin = None if path is None else str(path)
    path = _resolve(path)
    device = parse_device(device)
    quant = parse_quant(dtype)
    dtype = parse_dtype(None if quant else dtype, device)
    if quant:
        check_kernel(device)  # before reading a checkpoint that could not run
    if path.is_dir() and (path / "config.json").exists():
        config, state, where = hf.read(path)
    elif path.is_dir() and (path / "params.json").exists():
        config, state, where = meta.read(path)
    elif path.is_file() and llama2c.looks_like(path):
        config, state, where = llama2c.read(path)
    elif path.is_file() and (path.parent / "config.json").exists():
        config, state, where = hf.read(path.parent)
    else:
        raise ModelError(f"Cannot tell what checkpoint {path} is: expected {FORMATS}.")
    tokenizer = find_tokenizer(path if path.is_dir() else path.parent)
    config = _fill_special_ids(config, tokenizer)
    model = build(config, state, where, device, dtype)
    if quant:
        quantize_int8_(model)
    model.tokenizer, model.source, model.origin = tokenizer, str(path), origin
    model.files = identity.checkpoint_files(path, tokenizer.path.parent if tokenizer is not None else None)
    return model


def _resolve(path) -> Path:
    if path is None:
        if not any((DEMO_DIR / f).exists() for f in ("config.json", "params.json", "model.bin")):
            raise ModelError(
                f"The bundled demo model is missing from this installation ({DEMO_DIR} has no "
                "config.json): reinstall decode-dsl, or pass a checkpoint instead: "
                "decode.load('path/to/model') in Python, or --model PATH on the command line, "
                f"where PATH is {FORMATS}.")
        return DEMO_DIR
    if isinstance(path, str) and hub.looks_like_id(path):
        return hub.snapshot(path)  # org/name[@rev] from the local Hugging Face cache
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"{path} does not exist. Pass {FORMATS} (--model PATH), or a "
                         "Hugging Face id (org/name) of a model in the local HF cache.")
    return path


def parse_device(device) -> torch.device:
    """None -> cuda when available, else cpu; a device that is not there is a ModelError."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError) as err:
        raise ModelError(f"Unknown device {device!r} ({err}); use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"Device {device!r} asked for, but this torch has no CUDA device; "
                         f"run on cpu (--device cpu) or install a CUDA build of torch.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"Device {device!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s).")
    return dev


def parse_quant(dtype) -> str | None:
    """"int8" when `dtype` names weight-only int8 ("int8", "i8", torch.int8), else None."""
    named = isinstance(dtype, str) and dtype.lower() in _QUANT
    return "int8" if named or dtype is torch.int8 else None


def parse_dtype(dtype, device: torch.device) -> torch.dtype:
    """None -> float32 on CPU, bfloat16 on CUDA; accepts torch dtypes and "bf16"-style names."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() in _DTYPES:
        return _DTYPES[str(dtype).lower()]
    raise ModelError(f"Unknown dtype {dtype!r}: use one of fp32, bf16, fp16, int8 (or a torch dtype).")


def find_tokenizer(folder: Path):
    """tokenizer.model (sentencepiece) or tokenizer.json next to the weights, else None."""
    for cand in (folder, folder.parent):  # Meta downloads keep tokenizer.model one level up
        for name, kind in (("tokenizer.model", SentencePieceTokenizer), ("tokenizer.json", HFTokenizer)):
            if (cand / name).exists():
                tok = kind(cand / name)
                tok.chat_template = find_template(cand, tok.specials)
                return tok
    return None


def _fill_special_ids(config: LlamaConfig, tokenizer) -> LlamaConfig:
    # The checkpoint's config wins; the tokenizer fills what it leaves out.
    if tokenizer is None:
        return config
    if config.bos_id is None:
        config.bos_id = tokenizer.bos_id
    if not config.eos_ids and tokenizer.eos_id is not None:
        config.eos_ids = (tokenizer.eos_id,)
    if config.pad_id is None:
        config.pad_id = tokenizer.pad_id
    return config


def build(config: LlamaConfig, state: dict[str, Tensor], where, device, dtype) -> Llama:
    """A Llama holding `state` (our names), after checking every name and shape.

    `where(name)` says which tensor of which file `name` came from, for the messages.
    """
    with torch.device("meta"):
        model = Llama(config)
    expected = dict(model.state_dict())
    if config.tie_embeddings:  # some savers also write the tied copy; it is the same tensor
        expected.pop("output.weight")
        state = {k: v for k, v in state.items() if k != "output.weight"}
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(
            f"{where(missing[0])} is missing ({len(missing)} tensor(s) missing in all). The "
            f"checkpoint is incomplete (a shard not downloaded?) or is not a plain llama model.")
    unknown = [k for k in state if k not in expected]
    if unknown:
        raise ModelError(
            f"{where(unknown[0])} is not part of a llama model (config: {config.n_layers} layers, "
            f"tie_embeddings={config.tie_embeddings}). This architecture is not supported, or "
            f"the config does not belong to these weights.")
    for k, want in expected.items():
        if tuple(state[k].shape) != tuple(want.shape):
            raise ModelError(
                f"{where(k)} has shape {list(state[k].shape)} but the config (vocab_size="
                f"{config.vocab_size}, dim={config.dim}, n_heads={config.n_heads}, n_kv_heads="
                f"{config.n_kv_heads}, hidden_dim={config.hidden_dim}) implies {list(want.shape)}. "
                f"The config and the weights come from different models: re-download the "
                f"checkpoint or fix its config.")
    model.load_state_dict({k: state[k].to(dtype) for k in expected}, strict=False, assign=True)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.inv_freq = rope_inv_freq(config)  # float32 on purpose, whatever the weights' dtype
    model.requires_grad_(False)
    return model.to(device).eval().fuse_()

