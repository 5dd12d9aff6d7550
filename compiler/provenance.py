"""Provenance: what produced a result, recorded in every output so that it can be replayed.

    >>> outs = decode.generate(m, "sample | topp 0.9", ["ROMEO:"])
    >>> outs[0].provenance
    {'format': 1, 'seed': 81..., 'prompt_seed': 40..., 'model': None, 'model_hash': 'sha256:...',
     'decode': '0.1.0', 'torch': '2.13.0', 'device': 'cpu', 'dtype': 'float32', 'compiled': False}

`seed` is the run's seed (what `--seed` takes: the `seed` argument, else the recipe's `seed`
clause, else one drawn at random and used), `prompt_seed` the seed of this prompt's rows,
derived from it and the prompt's id or position; both are null when the recipe draws
nothing. `model` is the checkpoint as it was asked for (a path or org/name; null: the
bundled demo model) and `model_hash` the content hash of its files (runtime/identity.py;
null for a model built in memory). A run with a draft model (`draft`) adds `draft_hash`, the
draft's content hash, so that a replay with another draft is told apart (`OPTIONAL`: fields
only some runs have; adding one leaves `format` as it is). `FIELDS` is the layout, `format`
its version.
"""
from __future__ import annotations

import hashlib
import secrets

import torch

from decode.runtime.identity import model_hash

FORMAT = 1
FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,), "seed": (int, type(None)), "prompt_seed": (int, type(None)),
    "model": (str, type(None)), "model_hash": (str, type(None)), "decode": (str,), "torch": (str,),
    "device": (str,), "dtype": (str,), "compiled": (bool,),
}
OPTIONAL: dict[str, tuple[type, ...]] = {"draft_hash": (str, type(None))}


def derive_seed(base: int, key) -> int:
    """A stable 63-bit seed from a run seed and a prompt key (index or id)."""
    digest = hashlib.sha256(f"{int(base)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeding(plan, seed: int | None, seeds: list[int] | None, b: int) -> tuple[int | None, list[int] | None]:
    """(the run seed, each prompt's seed) for a run of `b` prompts; (None, None) when the
    recipe draws nothing. Without a `seed` argument the recipe's `seed` clause counts, else a
    fresh one is drawn (and recorded: a run without a seed can be replayed). Prompt i's seed
    is `seeds[i]` if given, else derived from the run seed and i."""
    if not (plan.sampling or plan.random):
        return None, None
    if seed is None and seeds is None:
        seed = plan.seed if plan.seed is not None else secrets.randbits(62)
    if seeds is None:
        seeds = [derive_seed(seed, i) for i in range(b)]
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} prompts; give one seed per prompt")
    return (None if seed is None else int(seed)), [int(s) for s in seeds]


def stamp(model, compiled: bool, seed: int | None = None, prompt_seed: int | None = None,
          draft=None) -> dict:
    """The provenance object of one result (see the module docstring); `draft`: the draft
    model the run's `draft` clause loaded, if any."""
    import decode

    p = next(model.parameters())
    dtype = getattr(model, "quant", None) or str(p.dtype).removeprefix("torch.")  # "int8": weight-only
    return {"format": FORMAT, "seed": seed, "prompt_seed": prompt_seed,
            "model": getattr(model, "origin", None), "model_hash": model_hash(model),
            "decode": decode.__version__, "torch": torch.__version__.split("+")[0],
            "device": str(p.device), "dtype": dtype, "compiled": bool(compiled),
            **({"draft_hash": model_hash(draft)} if draft is not None else {})}


def problem(obj) -> str | None:
    """What is wrong with a provenance object read back from a file, or None."""
    if not isinstance(obj, dict):
        return "it is not an object"
    if obj.get("format") != FORMAT:
        return f"its format is {obj.get('format')!r}; this decode reads format {FORMAT}"
    for key, kinds in (FIELDS | {k: v for k, v in OPTIONAL.items() if k in obj}).items():
        value = obj.get(key, ...)
        if value is ... or isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            return f'"{key}" is missing or not {" or ".join(k.__name__.replace("NoneType", "null") for k in kinds)}'
    return None


def footer(prov: dict) -> str:
    """One line for people: the seed, the model, the versions, where it ran."""
    seed = f"seed {prov['seed']}" if prov["seed"] is not None else "no draws (seed unused)"
    model = prov["model"] or "demo model"
    digest = (prov["model_hash"] or "in memory").removeprefix("sha256:")[:12]
    how = "compiled" if prov["compiled"] else "eager"
    return (f"{seed} · {model} {digest} · decode {prov['decode']} · torch {prov['torch']} · "
            f"{prov['device']} {prov['dtype']} {how}")
