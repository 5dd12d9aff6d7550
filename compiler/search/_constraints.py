"""The constraints of `force` as tensors: transformers' ConstraintListState, one row per beam.

Every constraint is a trie of token ids (a phrase: one path; `any(...)`: one path per
option, as the reference's DisjunctiveTrie). The nodes of all tries are numbered together;
`Tries` holds them on the host and `tensors` as constants. A row's state is three [X, C]
tensors: `node`, each constraint's place in its trie (its root: pending); `done`, which
constraints are met; `order`, the pending list's order (a constraint that breaks off goes
to its end). The rules are the reference's (generation/beam_constraints.py, 4.55.4):

- one constraint at a time is in progress; a token that continues it steps it, any other
  token sends it back to the end of the pending list, and that token is not tried against
  the pending ones;
- with none in progress, a token steps the first pending constraint (in list order) that
  it starts;
- a row that met them all changes no more; its bank is (met)·M + (M - tokens left of the
  one in progress), M the longest constraint (its deepest leaf).

    >>> t = Tries.build([[(5, 6)], [(7,), (8, 9)]])
    >>> t.edges, t.leaf
    (((0, 5, 2), (2, 6, 3), (1, 7, 4), (1, 8, 5), (5, 9, 6)), (False, False, False, True, True, False, True))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decode.dsl.phrases import constraints
from decode.dsl.spec import Call, spell_value

BIG = 1 << 40


@dataclass(frozen=True)
class Tries:
    roots: tuple[int, ...]               # per constraint, its root node
    edges: tuple[tuple[int, int, int], ...]  # (from node, token, to node), in insertion order
    depth: tuple[int, ...]               # per node
    leaf: tuple[bool, ...]
    height: tuple[int, ...]              # per constraint: its longest option (seqlen)

    @staticmethod
    def build(constraints: list[list[tuple[int, ...]]]) -> "Tries":
        """The tries of constraints given as their options' token ids (checked by `check`)."""
        roots, edges, depth, kids = list(range(len(constraints))), [], [0] * len(constraints), {}
        for c, options in enumerate(constraints):
            for ids in options:
                at = c
                for tok in ids:
                    if (at, tok) not in kids:
                        kids[at, tok] = len(depth)
                        edges.append((at, tok, len(depth)))
                        depth.append(depth[at] + 1)
                    at = kids[at, tok]
        parents = {e[0] for e in edges}
        leaf = tuple(n not in parents for n in range(len(depth)))
        return Tries(tuple(roots), tuple(edges), tuple(depth), leaf,
                     tuple(max(map(len, o)) for o in constraints))

    def branches(self) -> tuple[int, ...]:
        """Edges leaving a node inside a trie that has several children: where the reference's
        copies of an in-progress any(...) share one progress list (see `advance_banks`)."""
        out = [e[0] for e in self.edges]
        return tuple(i for i, e in enumerate(self.edges) if e[0] not in self.roots and out.count(e[0]) > 1)


def check(constraints: list[list[tuple[int, ...]]], texts: list[list[str]], vocab: int, max_new: int) -> None:
    """What the reference refuses, or what cannot fit: one ValueError naming the phrase and the fix."""
    for options, words in zip(constraints, texts):
        for ids, word in zip(options, words):
            if not ids:
                raise ValueError(f"force: {word} encodes to no tokens; give a phrase with some text")
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise ValueError(f"force: {word} holds token id {bad[0]}, outside this model's "
                                 f"vocabulary (ids 0..{vocab - 1}); give ids of this model")
        if min(map(len, options)) > max_new:
            raise ValueError(f"force: {words[0]} is {min(map(len, options))} tokens, more than "
                             f"max {max_new} new tokens; raise max or shorten the phrase")
        for i, a in enumerate(options):
            for j, b in enumerate(options):
                if i != j and b[:len(a)] == a and (len(a) < len(b) or i < j):
                    raise ValueError(f"force: in any(...), {words[i]} (ids {list(a)}) is the start "
                                     f"of {words[j]} (ids {list(b)}); transformers' "
                                     "DisjunctiveConstraint refuses that: drop one of them")


def tensors(t: Tries, device) -> dict:
    """The tries as constant tensors (edges [E], nodes [N], constraints [C])."""
    def long(x):
        return torch.tensor(x, dtype=torch.long, device=device)

    con = list(range(len(t.roots))) + [0] * (len(t.depth) - len(t.roots))
    for f, _, to in t.edges:  # a node's constraint is its parent's (edges come parent first)
        con[to] = con[f]
    ef, et, eto = (long([e[i] for e in t.edges]) for i in range(3))
    return {"ef": ef, "et": et, "eto": eto, "root": long(t.roots), "depth": long(t.depth),
            "leaf": torch.tensor(t.leaf, device=device), "height": long(t.height),
            "econ": long([con[e[0]] for e in t.edges]), "eroot": ef < len(t.roots), "M": max(t.height)}


def start(T: dict, rows: int, device) -> dict:
    """The state of `rows` rows that have read nothing."""
    c = T["root"].shape[0]
    return {"node": T["root"].expand(rows, c).clone(), "done": torch.zeros(rows, c, dtype=torch.bool, device=device),
            "order": torch.arange(c, device=device).expand(rows, c).clone()}


def read(T: dict, prompts: list[list[int]], device) -> dict:
    """The state of each prompt's row after reading it (the reference reads the prompt too)."""
    st = start(T, len(prompts), device)
    longest = max(map(len, prompts))
    ids = torch.tensor([[0] * (longest - len(p)) + list(p) for p in prompts], device=device)
    first = torch.tensor([longest - len(p) for p in prompts], device=device)
    for i in range(longest):
        new = add(T, st, ids[:, i])
        st = {k: torch.where((first <= i)[:, None], new[k], st[k]) for k in st}
    return st


def gather(st: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in st.items()}


def children(T: dict, node: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """[..., C]: the child of each constraint's node by token `tok` [...], -1 where none."""
    match = (T["ef"] == node[..., None]) & (T["et"] == tok[..., None, None])
    return (match.long() * (T["eto"] + 1)).sum(-1) - 1


def _in_progress(T: dict, st: dict) -> torch.Tensor:
    return (st["node"] != T["root"]) & ~st["done"]


def add(T: dict, st: dict, tok: torch.Tensor) -> dict:
    """The state after token `tok` [X] (ConstraintListState.add)."""
    node, done, order = st["node"], st["done"], st["order"]
    busy = _in_progress(T, st)
    child = children(T, node, tok)
    ok = child >= 0
    pending = (node == T["root"]) & ~done & ~busy.any(-1, keepdim=True)
    can = pending & ok
    first = torch.where(can, order, BIG).argmin(-1, keepdim=True)
    step = busy & ok | can & (torch.arange(node.shape[-1], device=node.device) == first)
    drop = busy & ~ok
    new = {"node": torch.where(step, child, torch.where(drop, T["root"], node)),
           "done": done | step & T["leaf"][child.clamp(min=0)],
           "order": torch.where(drop, order.max(-1, keepdim=True).values + 1, order)}
    full = done.all(-1, keepdim=True)
    return {k: torch.where(full, st[k], new[k]) for k in st}


def met(st: dict) -> torch.Tensor:
    """[X] bool: every constraint is met."""
    return st["done"].all(-1)


def bank(T: dict, st: dict) -> torch.Tensor:
    """[X] (ConstraintListState.get_bank)."""
    m = T["M"]
    part = torch.where(_in_progress(T, st), m - T["height"] + T["depth"][st["node"]], 0).sum(-1)
    return st["done"].sum(-1) * m + part


def advancing(T: dict, st: dict) -> torch.Tensor:
    """[X, E]: the edges whose token advances the row (ConstraintListState.advance)."""
    busy = _in_progress(T, st)
    at = torch.where(busy, st["node"], -1).max(-1).values                   # -1: none in progress
    pending = (st["node"] == T["root"]) & ~st["done"]
    from_root = T["eroot"] & pending[:, T["econ"]]
    return torch.where(busy.any(-1, keepdim=True), T["ef"] == at[:, None], from_root) & ~met(st)[:, None]


def advance_banks(T: dict, st: dict, ok: torch.Tensor, branches: tuple[int, ...]):
    """([X, E], [X·E, C] states): the bank the reference gives each advancing token of row
    x (`ok` [X, E]), and the state it leads to.

    Its copies of an in-progress any(...) share one progress list (DisjunctiveConstraint.copy
    keeps `current_seq`): each advancing token, in trie order, extends that list if it can,
    else breaks off, and a copy that stepped is scored by the list as the last token left it.
    Elsewhere a token's bank is that of the state it leads to."""
    x, e = ok.shape
    after = add(T, {k: v.repeat_interleave(e, 0) for k, v in st.items()}, T["et"].repeat(x))
    out = bank(T, after).view(x, e)
    if not branches:
        return out, after
    shared = torch.where(_in_progress(T, st), st["node"], -1).max(-1).values
    con = (_in_progress(T, st).long() * torch.arange(st["node"].shape[-1], device=ok.device)).sum(-1)
    stepped, ended = {}, {}
    for i in branches:  # the edges of one node come in trie order
        child = children(T, shared[:, None], T["et"][i].expand(x))[:, 0]
        stepped[i] = ok[:, i] & (child >= 0)
        ended[i] = stepped[i] & T["leaf"][child.clamp(min=0)]
        shared = torch.where(stepped[i], child, shared)
    m, count = T["M"], st["done"].sum(-1)
    left = m - T["height"][con] + T["depth"][shared.clamp(min=0)]
    for i in branches:
        got = count * m + torch.where(stepped[i], torch.where(ended[i], m, left), 0)
        out[:, i] = torch.where(ok[:, i], got, out[:, i])
    return out, after


def encode(phrases: tuple, tokenizer, vocab: int, max_new: int) -> list[list[tuple[int, ...]]]:
    """`force`'s phrases as token ids per constraint and option (a text as it reads mid-text,
    without BOS, as `ban` and `bias` encode theirs), checked."""
    opts = constraints(phrases)
    if any(isinstance(o, str) for c in opts for o in c) and tokenizer is None:
        raise ValueError("force: a phrase given as text needs the model's tokenizer; "
                         "give its ids as ids(N, ...) or load a model with a tokenizer")
    ids = [[o if isinstance(o, tuple) else tuple(int(i) for i in tokenizer.encode(o, bos=False)) for o in c]
           for c in opts]
    check(ids, [[spell_value(o if isinstance(o, str) else Call("ids", o)) for o in c] for c in opts], vocab, max_new)
    return ids

