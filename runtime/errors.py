"""The runtime's one error type, and the checks the engine calls before decoding."""
from __future__ import annotations


class ModelError(Exception):
    """A checkpoint, tokenizer or prompt problem, told as one paragraph: what, where, the fix.

        >>> raise ModelError("no config.json in /ckpt: ... pass --model DIR")
    """


def check_fits(prompt_len: int, max_new: int, config) -> None:
    """Raise ModelError unless `prompt_len + max_new` positions fit the model's context.

        >>> check_fits(10, 128, model.config)
    """
    need = prompt_len + max_new
    if need > config.max_seq_len:
        raise ModelError(
            f"The prompt is {prompt_len} tokens and up to {max_new} new tokens are asked for, "
            f"which needs {need} positions, but the model's context is {config.max_seq_len} "
            f"(max_position_embeddings / max_seq_len of the checkpoint). Shorten the prompt "
            f"to at most {max(config.max_seq_len - max_new, 0)} tokens or lower `max` to at most "
            f"{max(config.max_seq_len - prompt_len, 0)}."
        )


def require_tokenizer(model):
    """Return `model.tokenizer`, or raise ModelError when the checkpoint came without one.

        >>> ids = require_tokenizer(m).encode("ROMEO:")
    """
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        source = getattr(model, "source", None) or "the checkpoint"
        raise ModelError(
            f"Text prompts need a tokenizer, but none was found next to {source} "
            f"(looked for tokenizer.model and tokenizer.json). Put the model's tokenizer "
            f"file beside the weights, or pass token ids instead (--prompt-ids 1,2,3)."
        )
    return tok
