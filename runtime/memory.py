"""Will it fit? What decoding allocates, checked against the memory free, before allocating it.

`beam 100000` asks for a KV cache of 100000 rows: allocating it first would hang the
machine in swap or end in a MemoryError traceback. The estimates here are floors (the
buffers that must exist at once), so a refusal is certain to be right; a run they let
through can still be a little over. Tests monkeypatch `available_bytes`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .config import LlamaConfig
from .errors import ModelError

GB = 1e9


def available_bytes(device: torch.device) -> int | None:
    """Bytes that new tensors on `device` can take now, or None when that is unknown.

        >>> available_bytes(torch.device("cpu"))     # Linux: MemAvailable, or the cgroup's room
        23464364032

    CUDA: the driver's free memory plus what torch's allocator holds but does not use.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        return _linux_available()
    return None


def _linux_available() -> int | None:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None  # not Linux: skip the check
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    if found is None:
        return None
    room = [int(found[1]) * 1024]
    try:  # in a container the cgroup's limit, not the host's memory, is what runs out
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        room.append(int(limit) - used)
    except (OSError, ValueError):  # no cgroup v2, or no limit ("max")
        pass
    return min(room)


def cache_bytes(config: LlamaConfig, rows: int, slots: int, dtype: torch.dtype) -> int:
    """The KV cache of `rows` sequences of `slots` positions (keys and values, every layer)."""
    c = config
    return 2 * c.n_layers * rows * c.n_kv_heads * slots * c.head_dim * dtype.itemsize


def step_bytes(config: LlamaConfig, rows: int, slots: int, prompt_len: int,
               dtype: torch.dtype, ahead: int = 0) -> int:
    """A floor on the other buffers of a run: the larger of the prefill's (attention mask,
    hidden states, MLP activations) and a step's (float32 logits, scores, a sorted copy and
    its order), plus the token history and finished beams (int64). With `ahead` candidates
    per row run one step ahead (Llama.candidates): their logits and a copy, and the context
    of hidden states a search keeps (twice: it is updated each step)."""
    c = config
    prefill = prompt_len * prompt_len + prompt_len * (2 * c.dim + 2 * c.hidden_dim) * dtype.itemsize
    step = 4 * c.vocab_size * 4 + ahead * 2 * c.vocab_size * 4 + (ahead > 0) * 2 * slots * c.dim * 4
    return rows * (max(prefill, step) + 3 * slots * 8)


def check_decode(model, rows: int, slots: int, prompt_len: int, fix: str, ahead: int = 0) -> None:
    """Raise ModelError when decoding `rows` sequences in a `slots`-long cache cannot fit.

        >>> check_decode(m, rows=100000, slots=288, prompt_len=16, fix="Lower the beam width.")
        ModelError: Decoding needs 124.3 GB (100000 rows x 288 slots: KV cache 117.9 GB, ...

    `ahead`: candidates per row a search runs one step ahead (their cache slots are in
    `slots`). A model that is not a runtime `Llama` (a test double of the engine's contract) has no
    known layout, so it is not checked.
    """
    if not isinstance(model.config, LlamaConfig):
        return
    w = model.tok_embeddings.weight
    cache = cache_bytes(model.config, rows, slots, w.dtype)
    other = step_bytes(model.config, rows, slots, prompt_len, w.dtype, ahead)
    check_memory(cache + other, w.device, f"Decoding needs {_size(cache + other)} ({rows} rows x "
                 f"{slots} slots: KV cache {_size(cache)}, other buffers {_size(other)})", fix)


def check_memory(need: int, device: torch.device, what: str, fix: str) -> None:
    """Raise ModelError "<what>; this machine has M GB available. <fix>" when `need` bytes
    are more than `device` has; skipped when that is unknown (not Linux, not CUDA).

        >>> check_memory(30 * 10**9, torch.device("cpu"), "The 7b shape needs 30.0 GB", "Use 1b.")
        ModelError: The 7b shape needs 30.0 GB; this machine has 23.5 GB available. Use 1b.
    """
    have = available_bytes(device)
    if have is None or need <= have:
        return
    place = "this machine has" if device.type == "cpu" else f"{device} has"
    raise ModelError(f"{what}; {place} {_size(max(have, 0))} available. {fix}")


def _size(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 1e6:.1f} MB"
