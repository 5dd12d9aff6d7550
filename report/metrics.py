"""What a sweep report measures per point, from result lines (plain Python, no torch).

    >>> distinct([[1, 2, 1, 2]], 2)       # 2-grams (1,2), (2,1), (1,2): 2 distinct of 3
    0.6666666666666666

- distinct-n (Li et al. 2016): distinct n-grams over all n-grams of a point's sequences, pooled.
- repetition: seq-rep-4 (Welleck et al. 2019), per sequence 1 - distinct 4-grams / 4-grams,
  averaged over the sequences that have a 4-gram.
- mean log-prob: per new token, under the model (computed by `score.py`); perplexity is
  exp(-mean log-prob).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Point:
    """One sweep point (or one recipe of a results file) and what the report shows for it."""

    index: int
    recipe: str
    values: dict
    prompts: set = field(default_factory=set)
    seqs: list[list[int]] = field(default_factory=list)
    contexts: list[list[int]] = field(default_factory=list)  # each sequence's prompt ids
    finishes: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    logp_sum: float = 0.0     # filled by score.py: log-probs of the new tokens, summed
    logp_tokens: int = 0

    @property
    def mean_new(self) -> float:
        return sum(map(len, self.seqs)) / max(len(self.seqs), 1)

    @property
    def tokens_per_s(self) -> float | None:
        return sum(map(len, self.seqs)) / self.seconds if self.seconds > 0 else None

    @property
    def mean_logp(self) -> float | None:
        return self.logp_sum / self.logp_tokens if self.logp_tokens else None

    @property
    def perplexity(self) -> float | None:
        m = self.mean_logp
        return None if m is None or -m > 700 else math.exp(-m)  # beyond ~1e304: not a float


def distinct(seqs: list[list[int]], n: int) -> float | None:
    """Distinct n-grams over all n-grams of `seqs` (None when there is none)."""
    grams = [tuple(s[i:i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repetition(seqs: list[list[int]], n: int = 4) -> float | None:
    """seq-rep-n: the mean over sequences of 1 - distinct n-grams / n-grams (None: none long enough)."""
    rates = []
    for s in seqs:
        grams = [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else None


def points(lines: list[dict]) -> list[Point]:
    """The points of result lines: by their `point` tag, else one per recipe fingerprint."""
    found: dict = {}
    for line in lines:
        tag = line.get("point")
        key = tag["index"] if tag else line["fingerprint"]
        p = found.get(key)
        if p is None:
            p = found[key] = Point(len(found) if tag is None else tag["index"], line["recipe"],
                                   dict(tag["values"]) if tag else {})
        p.prompts.add(repr(line.get("id", line["prompt_ids"])))
        p.seconds += float(tag.get("seconds", 0.0)) if tag else 0.0
        for s in line["sequences"]:
            p.seqs.append(list(s["ids"]))
            p.contexts.append(list(line["prompt_ids"]))
            p.finishes[s["finish"]] += 1
    return sorted(found.values(), key=lambda p: p.index)
