"""The draft model of `draft "path"`: loaded once per target, and refused unless it reads
and writes the target's tokens (same vocabulary, same token for every id)."""
from __future__ import annotations

from decode.runtime.errors import ModelError

_ATTR = "_decode_drafts"


def load_draft(target, path: str):
    """The draft model at `path` ("demo-draft": the bundled one), on the target's device and
    dtype, checked against the target's tokenizer; kept on the target for the next run."""
    cache = target.__dict__.setdefault(_ATTR, {})
    if path not in cache:
        from decode.runtime import load
        from decode.runtime.loaders import DEMO_DRAFT_DIR

        w = next(target.parameters())
        draft = load(DEMO_DRAFT_DIR if path == "demo-draft" else path, device=w.device, dtype=w.dtype)
        same_vocabulary(target, draft, path)
        cache[path] = draft
    return cache[path]


def same_vocabulary(target, draft, path: str) -> None:
    """ModelError naming the first difference when the draft's tokens are not the target's."""
    v, dv = target.config.vocab_size, draft.config.vocab_size
    fix = "give `draft` a model trained with the target's tokenizer"
    if v != dv:
        raise ModelError(f"draft model {path}: its vocabulary has {dv} tokens, the target's {v}; "
                         f"drafts are token ids, so both must share one tokenizer: {fix}")
    tt, dt = target.tokenizer, draft.tokenizer
    if tt is None or dt is None:
        return  # ids only: the sizes agree, and that is all there is to compare
    for i in range(v):
        a, b = tt.decode([i]), dt.decode([i])
        if a != b:
            raise ModelError(f"draft model {path}: token {i} is {b!r} there but {a!r} in the target's "
                             f"tokenizer; the two tokenizers differ: {fix}")
