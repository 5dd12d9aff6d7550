"""Search strategies: each is one class with one `step`, in the spirit of fairseq's search.py.

A strategy decides how many rows a prompt gets and, given one step's scores, which token
each row takes next, which row it continues and the score it carries (`base.Choice`).
Around it, the rows (base.py) or the beam pool (pool.py) keep what finished and make the
results; the engine owns the model, the KV cache and the token history.
"""
from decode.compiler.search.base import Choice, Search, SearchConfig

__all__ = ["Choice", "Search", "SearchConfig"]
