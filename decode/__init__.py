"""decode: a declarative decoding DSL and compiler for llama-family language models.

    >>> import decode
    >>> r = decode.parse("beam 4 | max 32")

Importing `decode` does not import torch; `load`, `generate` and `transform` import it
when first called.

A new logit stage is one decorated function (see `stage`); `load_stages("f.py")` runs a
file of them, as `decode run --stage f.py` does.
"""
from decode.compiler.plugins import Arg, PluginError, load_stages, stage  # noqa: F401  (torch-free)
from decode.dsl import RecipeError, parse  # noqa: F401  (torch-free)

__all__ = ["parse", "RecipeError", "load", "generate", "transform",
           "stage", "Arg", "load_stages", "PluginError"]
__version__ = "0.1.0"


def load(path=None, device=None, dtype=None):
    """Load a llama checkpoint (HF dir, Meta dir, llama2.c .bin); None -> the demo model.

        >>> m = decode.load("path/to/llama")
    """
    from decode.runtime import load as _load

    return _load(path, device=device, dtype=dtype)


def generate(model, recipe, prompts, seed=None, **kw):
    """Decode `prompts` (list of str or list of token-id lists) with `recipe`.

        >>> outs = decode.generate(m, "beam 4 | max 16", ["ROMEO:"])
        >>> outs[0].sequences[0].text
    """
    from decode.compiler.engine import generate as _generate

    return _generate(model, recipe, prompts, seed=seed, **kw)


def transform(recipe, logits, input_ids):
    """Apply the recipe's logit stages, in written order, to one step's logits.

        >>> decode.transform("topk 5 | temp 0.7", logits, input_ids)
    """
    from decode.compiler.transform import transform as _transform

    return _transform(recipe, logits, input_ids)
