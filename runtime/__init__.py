"""The llama runtime: model, static KV cache, checkpoint loaders, tokenizers.

    >>> from decode.runtime import load
    >>> m = load("path/to/llama")        # HF dir, Meta dir or llama2.c .bin
    >>> logits = m(torch.tensor([m.tokenizer.encode("ROMEO:")]))

Knows nothing of recipes: it never imports decode.dsl or decode.compiler.
"""
from .cache import KVCache
from .config import LlamaConfig
from .errors import ModelError, check_fits, require_tokenizer
from .loaders import load
from .model import Llama

__all__ = ["load", "Llama", "LlamaConfig", "KVCache", "ModelError", "check_fits",
           "require_tokenizer"]
