"""DoLa's candidate premature layers for a model, as transformers 4.55.4's `_dola_decoding`
chooses them, and the messages for a model or a list it cannot use."""
from __future__ import annotations

from decode.runtime.errors import ModelError

PART = 40  # beyond this many layers, 'high' and 'low' span 20 layers, not half the model


def candidates(config, listed: tuple[int, ...], part: str) -> tuple[int, ...]:
    """The distinct layers (0: the embeddings' output) DoLa contrasts with the last one.

        >>> candidates(LlamaConfig(vocab_size=8, dim=8, n_layers=8, n_heads=1, n_kv_heads=1,
        ...                        hidden_dim=8), (), "high")
        (4, 6)
    """
    n = config.n_layers
    if n < 2:
        raise ModelError(f"dola contrasts the last layer with an earlier one, and this model has "
                         f"{n} layer; decode it without dola, or use a model of 2 or more layers")
    if listed:
        bad = [i for i in listed if i >= n]
        if bad:
            raise ModelError(f"dola layer {bad[0]} is not an early exit of this model: it has {n} "
                             f"layers, so they are 0 (the embeddings) .. {n - 1}; list layers in that range")
        return tuple(dict.fromkeys(listed))
    found = _low(n, _start(n, config.tie_embeddings)) if part == "low" else _high(n)
    if not found:
        raise ModelError(f"dola layers={part} leaves no layer on this {n}-layer model with tied "
                         f"embeddings (transformers skips layers 0 and 1 there); list the layers, "
                         f"e.g. 'dola 1'")
    return found


def _start(n: int, tied: bool) -> int:
    # tied embeddings make layer 0's early exit the identity map: skip it (and layer 1 if deep enough)
    if not tied:
        return 0
    return 2 if n > 2 else 1


def _low(n: int, start: int) -> tuple[int, ...]:
    if start == n // 2:
        return (start,)
    return tuple(range(start, n // 2 if n <= PART else 20, 2))


def _high(n: int) -> tuple[int, ...]:
    return tuple(range(n // 2, n, 2) if n <= PART else range(n - 20, n, 2))
