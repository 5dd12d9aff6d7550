"""What a loaded model is made of: its files, and one content hash over them.

    >>> m = load("ckpt/llama-hf")
    >>> model_hash(m)        # 'sha256:3f1c...' over weights, config and tokenizer files

The hash covers the files the loader read (config, weights, the tokenizer and its chat
template), each named relative to the checkpoint's folder, so a copied or moved checkpoint
keeps its hash and an edited one does not. Hashing gigabytes once is enough: each file's
digest is kept in a small cache file (`hashes.json` under `$XDG_CACHE_HOME/decode`, else
`~/.cache/decode`; `DECODE_CACHE_DIR` overrides), keyed by its real path, size and mtime,
so a second run only stats the files. A cache that cannot be read or written is ignored.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

CACHE_NAME = "hashes.json"
_CHUNK = 8 << 20
_TOKENIZER = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "special_tokens_map.json")


def checkpoint_files(path: Path, tokenizer_folder: Path | None) -> tuple[Path, ...]:
    """The files the loader reads for the checkpoint at `path` (as `loaders.load` tells the
    formats apart), and the tokenizer files of `tokenizer_folder`."""
    from . import hf

    folder = path if path.is_dir() else path.parent
    if path.is_dir() and (path / "params.json").exists() and not (path / "config.json").exists():
        files = [path / "params.json", *sorted(path.glob("consolidated.*.pth"))]
    elif path.is_file() and not (folder / "config.json").exists():
        files = [path]  # llama2.c
    else:
        weights, index = hf.weight_files(folder)
        files = [folder / n for n in ("config.json", "generation_config.json")] + weights
        files += [index[0]] if index else []
    if tokenizer_folder is not None:
        files += [tokenizer_folder / n for n in _TOKENIZER]
    return tuple(sorted({f for f in files if f.is_file()}))


def files_hash(files: tuple[Path, ...], root: Path) -> str:
    """'sha256:<hex>' over (name relative to `root`, the file's own sha256) of every file."""
    cache, changed = _read_cache(), False
    whole = hashlib.sha256()
    for f in files:
        key, st = os.path.realpath(f), f.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = cache.get(key)
        if not (isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str)):
            entry, changed = {"stat": stamp, "sha256": _digest(f)}, True
            cache[key] = entry
        name = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        whole.update(f"{name}\0{entry['sha256']}\n".encode())
    if changed:
        _write_cache(cache)
    return "sha256:" + whole.hexdigest()


def model_hash(model) -> str | None:
    """The content hash of a loaded model's files (kept on the model once computed), or None
    for a model built in memory rather than loaded from files."""
    found = getattr(model, "content_hash", None)
    if found is None and getattr(model, "files", ()):
        found = files_hash(model.files, Path(model.source) if Path(model.source).is_dir()
                           else Path(model.source).parent)
        model.content_hash = found
    return found


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def cache_path() -> Path:
    """Where the digests are kept (read from the environment when called)."""
    own = os.environ.get("DECODE_CACHE_DIR")
    base = Path(own) if own else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "decode"
    return base / CACHE_NAME


def _read_cache() -> dict:
    try:
        found = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_cache(cache: dict) -> None:
    """Replace the cache file atomically; a cache that cannot be written is left (hashing still works)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hashes.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cache, f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
