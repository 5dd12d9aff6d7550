"""Search strategies: each is one class with one `step`, in the spirit of fairseq's search.py.

A strategy decides how many rows a prompt gets, what state it carries between steps, and,
given one step's log-probabilities, which token each row takes next and which row it
continues. The engine owns the model, the KV cache and the token history; the strategy owns
only the choice.
"""
from decode.compiler.search.base import Search, SearchConfig

__all__ = ["Search", "SearchConfig"]
