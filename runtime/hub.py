"""Models where users keep them: a Hugging Face id resolved from the local HF cache, offline.

    >>> snapshot("meta-llama/Llama-3.2-1B")          # -> .../models--meta-llama--Llama-3.2-1B/snapshots/<sha>
    >>> snapshot("meta-llama/Llama-3.2-1B@main")     # a branch, tag or commit of the cache's refs

The cache is where transformers and `huggingface-cli download` put files: `HF_HUB_CACHE`, else
`HF_HOME/hub`, else `~/.cache/huggingface/hub` (read when called, so a changed environment
counts). Nothing is downloaded: `huggingface_hub` (the `hf` extra) reads the cache with
`local_files_only=True`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelError

# org/name with an optional @revision; the characters the Hub allows in repository names
_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


def looks_like_id(text: str) -> bool:
    """True for 'org/name' or 'org/name@rev' that is not a path on this machine."""
    return bool(_ID.fullmatch(text)) and not Path(text).expanduser().exists()


def cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(hub).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def snapshot(model_id: str) -> Path:
    """The local snapshot folder of `org/name[@revision]`; a ModelError naming what is cached if absent."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise ModelError(f"--model {model_id} names a Hugging Face model id, which needs the "
                         "`huggingface_hub` package: pip install 'decode-dsl[hf]', or pass the "
                         "checkpoint's folder instead") from None
    repo, _, revision = model_id.partition("@")
    where = cache_dir()
    try:
        return Path(snapshot_download(repo, revision=revision or None, cache_dir=where,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError):
        pass
    cached = cached_models(where)
    listing = ("cached there: " + ", ".join(cached)) if cached else "nothing is cached there"
    at = f" at revision {revision!r}" if revision else ""
    raise ModelError(
        f"{repo}{at} is not in the local Hugging Face cache ({where}; {listing}). decode never "
        f"downloads: fetch it once with `huggingface-cli download {repo}`, set HF_HUB_CACHE or "
        "HF_HOME to the cache that has it, or pass the checkpoint's folder as --model PATH.")


def cached_models(where: Path) -> list[str]:
    """The model ids with at least one snapshot in the cache folder `where`, sorted."""
    if not where.is_dir():
        return []
    out = []
    for d in where.glob("models--*"):
        if (d / "snapshots").is_dir() and any((d / "snapshots").iterdir()):
            out.append(d.name[len("models--"):].replace("--", "/"))
    return sorted(out)
