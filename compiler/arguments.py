"""The Python API's argument checks, one place for `generate`, `steps` and `transform`.

A wrong argument is a TypeError (wrong kind) or ValueError (wrong value) that names the
argument and says how to fix it, before anything runs:

    >>> prompt_list("ROMEO:")
    TypeError: prompts must be a list of strings or of token-id lists; got a str: wrap it as ['ROMEO:']

Nothing is converted silently: a float token id or seed is refused, not truncated.
"""
from __future__ import annotations

import numbers

import torch

from decode.compiler.plan import Plan, compile as lower
from decode.dsl import Recipe
from decode.dsl.catalogue import setting_spec


def kind(x) -> str:
    """'a str', 'a float (1.5)', 'None': what a wrong argument was, for messages."""
    if x is None:
        return "None"
    name = type(x).__name__
    article = "an" if name[0] in "aeiou" else "a"
    shown = _short(x) if isinstance(x, (bool, numbers.Number)) else None
    return f"{article} {name}" + (f" ({shown})" if shown else "")


def _short(x) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def recipe_plan(recipe) -> Plan:
    """The Plan of `recipe`: a recipe text, a `decode.parse` result or a Plan."""
    if isinstance(recipe, Plan):
        return recipe
    if isinstance(recipe, (str, Recipe)):
        return lower(recipe)
    raise TypeError(f"recipe must be a recipe text such as 'beam 4 | max 32', a decode.parse(...) "
                    f"result or a Plan; got {kind(recipe)}")


def check_model(model) -> None:
    """`model` must be what `decode.load` returns (or behave like it)."""
    if not all(hasattr(model, a) for a in ("config", "prefill", "decode", "new_cache")):
        hint = f": load it with decode.load({_short(model)})" if isinstance(model, str) else ""
        raise TypeError(f"model must be a model from decode.load(...); got {kind(model)}{hint}")


def token_ids(ids, name: str) -> list[int]:
    """`ids` (a list, tuple, or 1-d tensor of ints) as a list of ints; bools and floats refused."""
    if isinstance(ids, torch.Tensor) and ids.dim() == 1:
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{name} must be a list of token ids; got {kind(ids)}")
    for j, x in enumerate(ids):
        if isinstance(x, bool) or not isinstance(x, numbers.Integral):
            float_ = isinstance(x, numbers.Real) and not isinstance(x, bool)
            why = ": a float is refused, not truncated" if float_ else ""
            raise TypeError(f"{name}[{j}] is {kind(x)}; token ids must be ints{why}")
    return [int(x) for x in ids]


def one_prompt(prompt, name: str = "prompt") -> str | list[int]:
    """One prompt: a text, or a non-empty list of token ids."""
    if isinstance(prompt, str):
        return prompt
    nested = isinstance(prompt, (list, tuple)) and all(isinstance(p, (str, list, tuple)) for p in prompt)
    if nested and prompt:
        raise TypeError(f"{name} must be one string or one list of token ids; got a list of prompts: "
                        f"give one, e.g. {_short(prompt[0])}")
    if not isinstance(prompt, (list, tuple, torch.Tensor)):
        raise TypeError(f"{name} must be a string or a list of token ids; got {kind(prompt)}")
    ids = token_ids(prompt, name)
    if not ids:
        raise ValueError(f"{name} is empty: give at least one token")
    return ids


def prompt_list(prompts) -> list[str | list[int]]:
    """A non-empty list of prompts (texts or token-id lists; a 2-d tensor is rows of ids)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings or of token-id lists; got a str: wrap it "
                        f"as [{_short(prompts)}]")
    if isinstance(prompts, torch.Tensor) and prompts.dim() == 2:
        prompts = prompts.tolist()
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a list of strings or of token-id lists; got {kind(prompts)}")
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt, e.g. ['ROMEO:']")
    if all(isinstance(p, numbers.Integral) for p in prompts):
        raise TypeError(f"prompts must be a list of prompts; got a list of ints: for one prompt of token "
                        f"ids wrap it as [{_short(list(prompts))}]")
    return [one_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]


def seed_value(seed, name: str = "seed") -> int | None:
    """None, or an int in the range the recipe's `seed` clause takes (0..2**64-1)."""
    if seed is None:
        return None
    hi = setting_spec("seed").positional[0].hi
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in 0..{hi} or None; got {kind(seed)}")
    if not 0 <= seed <= hi:
        raise ValueError(f"{name} must be in 0..{hi}; got {seed}")
    return int(seed)


def logprobs_value(n, vocab: int) -> int:
    """The alternatives per token that `logprobs=` asks for: an int from 0 (no log-probs)
    to the vocabulary size."""
    from decode.compiler.logprobs import MAX_VOCAB

    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"logprobs must be an int (the alternatives listed per token, 0 for none); got {kind(n)}")
    if not 0 <= n <= vocab:
        raise ValueError(f"logprobs={n} is outside 0..{vocab}: give how many alternatives to list per "
                         f"token, at most the model's vocabulary ({vocab} tokens)")
    if n and vocab > MAX_VOCAB:
        raise ValueError(f"logprobs: this model's vocabulary ({vocab} tokens) is larger than the "
                         f"{MAX_VOCAB} ids log-probs can name; decode without logprobs")
    return int(n)
