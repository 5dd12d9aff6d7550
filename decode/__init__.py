"""decode: a declarative decoding DSL and compiler for llama-family language models.

    >>> import decode
    >>> r = decode.parse("beam 4 | max 32")

Importing `decode` does not import torch; `load`, `generate` and `transform` import it
when first called.

A new logit stage is one decorated function (see `stage`), a new search strategy one
decorated `decode.Search` subclass (see `search`); `load_stages("f.py")` runs a file of
them, as `decode run --stage f.py` does. `steps` shows a search step by step.
"""
from decode.compiler.plugin_files import load_stages  # noqa: F401  (torch-free)
from decode.compiler.plugins import Arg, PluginError, stage  # noqa: F401  (torch-free)
from decode.dsl import RecipeError, parse  # noqa: F401  (torch-free)
from decode.dsl.sweep import sweep  # noqa: F401  (torch-free: the grid of a recipe with {sets})

__all__ = ["parse", "sweep", "RecipeError", "load", "generate", "transform", "steps",
           "stage", "search", "Search", "Choice", "Beam", "Arg", "load_stages", "PluginError"]
__version__ = "0.1.0"


def load(path=None, device=None, dtype=None):
    """Load a llama checkpoint (HF dir, Meta dir, llama2.c .bin); None -> the demo model.
    dtype: "fp32", "bf16", "fp16", or "int8" (weight-only int8 linears, the rest float32 on CPU).

        >>> m = decode.load("path/to/llama")
        >>> q = decode.load(dtype="int8")
    """
    from decode.runtime import load as _load

    return _load(path, device=device, dtype=dtype)


def generate(model, recipe, prompts, seed=None, **kw):
    """Decode `prompts` (list of str or list of token-id lists) with `recipe`; a wrong
    argument is a TypeError or ValueError saying how to fix it.

        >>> outs = decode.generate(m, "beam 4 | max 16", ["ROMEO:"])
        >>> outs[0].sequences[0].text
    """
    from decode.compiler.engine import generate as _generate

    return _generate(model, recipe, prompts, seed=seed, **kw)


def transform(recipe, logits, input_ids, model=None, *, tokenizer=None, eos=None, unconditional=None):
    """Apply the recipe's logit stages, in written order, to one step's logits [R, V] given
    the token history input_ids [R, T]. `model` gives the EOS ids (`minlen`) and the
    tokenizer (`ban`, `bias`); `eos=` and `tokenizer=` give them without one;
    `unconditional=` the logits [R, V] `cfg` guides away from.

        >>> decode.transform("topk 5 | minlen 3 | temp 0.7", logits, input_ids, model=m)
    """
    from decode.compiler.transform import transform as _transform

    return _transform(recipe, logits, input_ids, model, tokenizer=tokenizer, eos=eos, unconditional=unconditional)


def steps(model, recipe, prompt, seed=None, logprobs=0):
    """Run `recipe` on one prompt eagerly, yielding what the search did at each step: the
    rows and their texts, the candidates with processed log-probs and penalties, what was
    kept and why, the finished hypotheses. The last step's `.result` is the Completion
    `generate` returns. With `logprobs=N` each row's `.logprobs` lists its tokens' log-probs
    and N alternatives, the numbers `generate(..., logprobs=N)` gives.

        >>> for st in decode.steps(m, "beam 4 | max 8", "ROMEO:"):
        ...     print(st)
    """
    from decode.traces.steps import steps as _steps

    return _steps(model, recipe, prompt, seed=seed, logprobs=logprobs)


def __getattr__(name):
    # these need torch; `import decode` stays torch-free until they are used
    if name in ("search", "Search", "Choice", "Beam"):
        from decode.compiler.search import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module 'decode' has no attribute {name!r}")
