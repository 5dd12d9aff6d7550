"""`decode detect`: is a text watermarked by the `watermark` stage (Kirchenbauer et al. 2023)?

The detector is transformers 4.55.4's WatermarkDetector (generation/watermarking.py), on
the greenlists of compiler/stages/_greenlist.py, the ones the stage adds its bias to: each
token after the first WIDTH (they only seed) is green or not in the greenlist of its
context; T tokens scored with G green give z = (G - gamma·T) / sqrt(T·gamma·(1 - gamma))
and transformers' p-value, 1 - Φ(z) approximated as 1 - (1 + sign(z)(1 - exp(-2z²/π)))/2.

    >>> d = detect([5, 9, 9, 4, 1], 4096, Settings.from_flags())
    >>> d.scored
    4
"""
from __future__ import annotations

import collections
import json
import math
import os
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import torch

from decode.compiler.stages._greenlist import is_green
from decode.dsl import parse, lookup
from decode.dsl.ir import Recipe

VERSION = 1                # of the JSON object `decode detect --json` prints per text
THRESHOLD = 4.0            # z above which a text counts as watermarked (the paper's choice)
CLAUSE = "watermark"


@dataclass(frozen=True)
class Settings:
    """The watermark to look for: the `watermark` clause's parameters.

        >>> Settings.from_flags(gamma=0.5).clause
        'watermark gamma=0.5 key=15485863 scheme=lefthash width=1'
    """

    gamma: float
    key: int
    scheme: str
    width: int

    @classmethod
    def from_recipe(cls, recipe: "str | Recipe") -> "Settings":
        """The settings of the recipe's watermark clause, e.g. `"sample | watermark gamma=0.5"`;
        a ValueError when it has none."""
        clause = parse(recipe).get(CLAUSE)
        if clause is None:
            raise ValueError(f"--recipe {parse(recipe).canonical!r} has no watermark clause: give the "
                             "recipe the text was generated with, or the settings as flags")
        return cls(**{f.name: clause[f.name] for f in fields(cls)})

    @classmethod
    def from_flags(cls, **given) -> "Settings":
        """Settings from keyword values (None or left out: the clause's default), checked as the
        clause checks them."""
        text = " ".join([CLAUSE, *(f"{k}={v}" for k, v in given.items() if v is not None)])
        return cls.from_recipe(text)

    @property
    def clause(self) -> str:
        """The settings as the clause one writes (canonical, defaults filled in)."""
        spec = lookup(CLAUSE)
        return " ".join([CLAUSE, *(f"{f.name}={spec.param(f.name).spell(getattr(self, f.name))}"
                                   for f in fields(self))])


@dataclass(frozen=True)
class Detection:
    """One text's count: `scored` tokens, `green` of them green, the z-score and p-value."""

    tokens: int
    scored: int
    green: int
    z: float
    p: float

    def watermarked(self, threshold: float = THRESHOLD) -> bool:
        return self.z > threshold

    def to_json(self, settings: Settings, threshold: float = THRESHOLD, **where) -> dict:
        """The object `decode detect --json` prints (README: Watermarks), `where` first."""
        return {"detect": VERSION, **where, "watermark": settings.clause, "tokens": self.tokens,
                "scored": self.scored, "green": self.green, "green_fraction": self.green / self.scored,
                "z": self.z, "p": self.p, "threshold": threshold, "watermarked": self.watermarked(threshold)}


def detect(ids: Sequence[int], vocab: int, settings: Settings, bos: int | None = None) -> Detection:
    """Score token ids as transformers' WatermarkDetector (ignore_repeated_ngrams=False):
    a leading BOS is dropped; every n-gram counts, repeats included."""
    ids = list(ids)
    dropped = bool(ids) and bos is not None and ids[0] == bos
    ids = ids[dropped:]
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise ValueError(f"token id {bad} is outside the model's vocabulary (ids 0..{vocab - 1}): "
                         "detect with the --model the text was generated with")
    w, self_ = settings.width, settings.scheme == "selfhash"
    if len(ids) <= w:
        raise ValueError(f"the text has {len(ids)} token(s){' after its BOS' if dropped else ''}; "
                         f"detecting a watermark of width={w} needs at least {w + 1}: {w} to seed the "
                         "first greenlist and one to score")
    n = w + 1 - self_  # selfhash: the scored token is the last of its own window
    grams = collections.Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
    green = 0
    for gram, count in grams.items():
        window = torch.tensor(gram if self_ else gram[:-1])
        green += count * is_green(window, gram[-1], vocab, settings.gamma, settings.key, settings.scheme)
    scored = sum(grams.values())
    g = settings.gamma
    z = (green - g * scored) / math.sqrt(scored * g * (1 - g))
    sign = (z > 0) - (z < 0)
    p = 1 - (0.5 * (1 + sign * (1 - math.exp(-2 * z**2 / math.pi))))
    return Detection(len(ids), scored, green, z, p)


def read_source(arg: str) -> Iterator[tuple[dict, "str | list[int]"]]:
    """What to score in a `decode detect` argument, as (where, text or ids) pairs.

    An existing file is read: if every non-empty line is a `decode run --json` object, each of
    its sequences' `ids` (the new tokens, as generated) is scored; otherwise the whole file is
    one text. Any other argument is the text itself.
    """
    if not os.path.isfile(arg):
        yield {"input": "text"}, arg
        return
    with open(arg, encoding="utf-8", errors="replace") as f:
        body = f.read()
    runs = _runs(body)
    if runs is None:
        yield {"input": "file", "file": arg}, body
        return
    for line, run in runs:
        for j, seq in enumerate(run["sequences"]):
            yield {"input": "run", "file": arg, "line": line, "sequence": j}, list(seq["ids"])


def _runs(body: str) -> list[tuple[int, dict]] | None:
    """The `decode run --json` objects of a file by line number, or None if it is not one."""
    runs = []
    for n, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        ok = isinstance(obj, dict) and isinstance(obj.get("sequences"), list) and all(
            isinstance(s, dict) and isinstance(s.get("ids"), list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in s["ids"]) for s in obj["sequences"])
        if not ok:
            return None
        runs.append((n, obj))
    return runs or None
