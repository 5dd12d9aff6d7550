"""The one tree rebuilder: rows -> nodes from a search's step records, for the trace
recorder (`record`) and `decode.steps` alike.

Each step the engine reports, per prompt, the candidates the search weighed (token, logp,
the row it extends, kept, finished, group, penalty), the token each new row took and the
row it continues (`info["from"]`). A kept candidate of a row still going becomes a node
under that row's node. Each new row then takes:

- the node its source row had, if that one ended (a finished row only writes padding);
- the node of the kept candidate (its source row, its token);
- no node (`DEAD`) if the step lists that pair unkept (the search weighed it and dropped
  it: filler, a stopped row's padding), or if it is the padding of a row that stopped;
- else a node of its own, "unlisted" (its log-prob unknown): a search may list only a few
  candidates per row (greedy and sampling list the top 5) and draw another.

The records cannot tell one case apart: a row writing padding that is also an EOS id, which
no candidate lists, has stopped (a done group of diverse beam search) or drew that EOS
unlisted (sampling). There the tree takes the search's own word, `ranks_sequences`, never its
name. Torch-free: it reads plain lists.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

IMPOSSIBLE = -1.0e8  # scores at or below this are the searches' "never" filler
DEAD = -1            # a row that continues nothing (a done group, a stopped row, filler)
FIELDS = ("token", "logp", "parent", "kept", "finished", "group", "penalty")
DEFAULTS = {"group": 0, "penalty": 0.0}  # what a search's trace may leave out


def ranks_sequences(search) -> bool:
    """What the search says about its trace, in the one case its steps cannot tell: a search
    ranking whole sequences (the beam pool) lists every token it keeps, and its candidates'
    `logp` is the sequence's score; one of independent rows (greedy, sampling, sbeam, a
    user's) lists a few per row and gives each token's own log-prob.

        >>> from decode.compiler.plan import compile as lower
        >>> ranks_sequences(lower("beam 2").search), ranks_sequences(lower("sample 2").search)
        (True, False)
    """
    return bool(search.ranks_sequences)


def per_prompt(tokens: list[int], info: dict, prompts: int) -> Iterator[tuple[list[dict], list[int], list[int]]]:
    """One step's `on_step(t, tokens, info)` (as plain lists) cut per prompt: (its candidates,
    each with "row" the row within the prompt it extends; its new rows' tokens; the row within
    the prompt each new row continues).

        >>> info = {"token": [[7], [8]], "logp": [[-0.5], [-0.1]], "parent": [[0], [1]],
        ...         "kept": [[True], [True]], "finished": [[False], [False]], "from": [0, 1]}
        >>> [c[0]["row"] for c, _, _ in per_prompt([7, 8], info, 2)]
        [0, 0]
    """
    k = len(tokens) // prompts
    sources = list(info.get("from", range(len(tokens))))
    width = len(info["token"][0]) if "token" in info else 0
    for b in range(prompts):
        cols = [info[f][b] if f in info else [DEFAULTS.get(f, 0)] * width for f in FIELDS]
        cands = [dict(zip(FIELDS, vals), row=int(vals[2]) - b * k) for vals in zip(*cols)]
        yield cands, tokens[b * k:(b + 1) * k], [int(s) - b * k for s in sources[b * k:(b + 1) * k]]


def choice(cand: dict) -> tuple[int, int]:
    """A listed candidate's (row, token), what its log-probs depend on (decode.steps)."""
    return cand["row"], int(cand["token"])


@dataclass
class Seen:
    """A candidate of a row still going, placed in the tree."""

    row: int             # the row (within its prompt) it extends
    token: int
    logp: float | None   # None: a choice the step did not list
    group: int
    penalty: float
    kept: bool
    finished: bool
    ref: int | None      # the node it extends (None: the prompt itself)
    node: int | None     # its own node, if kept


class Tree:
    """Rows -> nodes of one prompt, rebuilt step by step (the module docstring has the rule).

        >>> tree = Tree(rows=2, eos=[2], pad=2, ranks_sequences=False)
        >>> cand = {"token": 5, "logp": -0.1, "row": 0, "kept": True, "finished": False,
        ...         "group": 0, "penalty": 0.0}
        >>> [(s.token, s.logp, s.node) for s in tree.step([cand], chosen=[5, 9], sources=[0, 1])]
        [(5, -0.1, 0), (9, None, 1)]
        >>> tree.rows, tree.locate([9])
        ([0, 1], 1)
    """

    def __init__(self, rows: int, eos: Iterable[int], pad: int, ranks_sequences: bool,
                 ids: Iterator[int] | None = None):
        self.rows: list[int | None] = [None] * rows  # per row: None (the prompt), a node, DEAD
        self.eos = set(eos)
        self.pad = pad
        self.lists_every_choice = ranks_sequences
        self.ids = ids if ids is not None else itertools.count()  # shared by a trace's prompts
        self.finished: set[int] = set()
        self.kids: dict[tuple, list[int]] = {}  # (parent node, token) -> nodes, for `locate`

    def step(self, cands: list[dict], chosen: list[int], sources: list[int]) -> list[Seen]:
        """Place one step: the candidates of rows still going, in the search's order, then a
        node per unlisted choice; `rows` then holds each new row's node."""
        seen = [s for s in (self._see(c) for c in cands) if s is not None]
        kept: dict[tuple, int | None] = {}
        for s in seen:
            if s.kept:
                kept.setdefault((s.row, s.token), s.node)
        listed = {(c["row"], int(c["token"])) for c in cands}
        rows = []
        for src, tok in zip(sources, chosen):
            ref = self._node_of(src)
            if ref == DEAD or ref in self.finished:
                rows.append(ref)
            elif (src, tok) in kept:
                rows.append(kept[src, tok])
            elif (src, tok) in listed or self._stopped(tok):
                rows.append(DEAD)
            else:
                seen.append(self._unlisted(src, tok, ref))
                rows.append(seen[-1].node)
        self.rows = rows
        return seen

    def locate(self, ids: list[int]) -> int | None:
        """The node reached by following `ids` from the prompt through kept nodes."""
        ids = [int(x) for x in ids]
        stack = [(None, 0)]
        while stack:  # depth first: two groups may both have taken the same token
            ref, depth = stack.pop()
            if depth == len(ids):
                return ref
            for node in reversed(self.kids.get((ref, ids[depth]), [])):
                stack.append((node, depth + 1))
        return None

    def _node_of(self, row: int) -> int | None:
        return self.rows[row] if 0 <= row < len(self.rows) else DEAD

    def _see(self, c: dict) -> Seen | None:
        ref, logp = self._node_of(c["row"]), float(c["logp"])
        if ref == DEAD or ref in self.finished or not math.isfinite(logp) or logp <= IMPOSSIBLE:
            return None
        token, kept, finished = int(c["token"]), bool(c["kept"]), bool(c["finished"])
        node = self._node(ref, token, finished) if kept else None
        return Seen(c["row"], token, logp, int(c["group"]), float(c["penalty"]), kept, finished, ref, node)

    def _stopped(self, tok: int) -> bool:
        """A row writing padding that its step did not list has stopped, unless the padding is
        an EOS id the search may have drawn without listing it."""
        return tok == self.pad and (tok not in self.eos or self.lists_every_choice)

    def _unlisted(self, row: int, tok: int, ref: int | None) -> Seen:
        fin = tok in self.eos
        return Seen(row, tok, None, 0, 0.0, True, fin, ref, self._node(ref, tok, fin))

    def _node(self, ref: int | None, token: int, finished: bool) -> int:
        node = next(self.ids)
        if finished:
            self.finished.add(node)
        self.kids.setdefault((ref, token), []).append(node)
        return node
