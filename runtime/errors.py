"""The runtime's one error type, and the checks the engine calls before decoding."""
from __future__ import annotations


class ModelError(Exception):
    """A checkpoint, tokenizer or prompt problem, told as one paragraph: what, where, the fix.

        >>> raise ModelError("no config.json in /ckpt: ... pass --model DIR")
    """


def check_fits(prompt_len: int, max_new: int, config) -> None:
    """Raise ModelError unless `prompt_len + max_new` positions fit the model's context.

        >>> check_fits(10, 128, model.config)

    The advice is only what can work: lower `max` when the prompt leaves room, shorten
    the prompt when `max` leaves room for one, and both when neither alone is enough.
    """
    ctx, need = config.max_seq_len, prompt_len + max_new
    if need <= ctx:
        return
    fixes = []
    if prompt_len < ctx:
        fixes.append(f"lower `max` to at most {ctx - prompt_len}")
    if max_new < ctx:
        fixes.append(f"shorten the prompt to at most {ctx - max_new} tokens")
    fix = " or ".join(fixes) or \
        f"shorten the prompt and lower `max` so that together they are at most {ctx}"
    alone = " The prompt alone fills the context." if prompt_len >= ctx else ""
    raise ModelError(
        f"The prompt is {prompt_len} tokens and up to {max_new} new tokens are asked for, "
        f"which needs {need} positions, but the model's context is {ctx} "
        f"(max_position_embeddings / max_seq_len of the checkpoint).{alone} "
        f"{fix[0].upper()}{fix[1:]}.")


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
