"""Structured output's host side: one llguidance matcher per row, and its bitmask per step.

The compiled step cannot run a matcher (it is Rust on the host), so the boundary is a
tensor: before each step the engine asks `masks` for every constraint's bitmask [R, W] and
puts it in that stage's state, which the kernel (stages/_constrain.py) unpacks and applies.
After the step the engine hands `masks` the rows' new tokens, already moved with their
beams: a row's matcher is found by the tokens it has generated (its history), so it follows
its beam's parent whatever the search did, and one parent with several children is copied
(`deep_copy`) for all but one. A row that has ended (EOS, a stop string) is not advanced.

A live row whose matcher allows no token (the tokenizer cannot go on with the text, or it
broke) is dead: its mask allows EOS alone, and `finish` reports its sequence with finish
"constraint" (the forced EOS taken off) and a warning.
"""
from __future__ import annotations

import ctypes
import warnings
import weakref

import torch

from decode.dsl.structured import grammar
from decode.runtime.tokenizer import HFTokenizer, SentencePieceTokenizer

WORD = 32
EOS, MAX = "eos", "max"  # finish reasons (search/base.py's trim)
_LLTOK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {(vocab, eos): LLTokenizer}
_EXECUTOR = []


class ConstraintWarning(UserWarning):
    """A sequence a constraint ended (finish "constraint") or that no sequence completed."""


def lltokenizer(tokenizer, vocab: int, eos: tuple[int, ...]):
    """llguidance's view of the model's tokenizer: each token's bytes (cached per tokenizer)."""
    import llguidance

    if tokenizer is None:
        raise ValueError("a constraint needs the model's tokenizer (to know each token's text); "
                         "load a checkpoint with tokenizer.model or tokenizer.json")
    cached = _LLTOK.setdefault(tokenizer, {})
    if (vocab, eos) not in cached:
        if isinstance(tokenizer, HFTokenizer):
            cached[vocab, eos] = llguidance.LLTokenizer(tokenizer.tk.to_str(), n_vocab=vocab, eos_token=list(eos))
        elif isinstance(tokenizer, SentencePieceTokenizer):
            pieces = _Pieces(tokenizer, eos)
            cached[vocab, eos] = pieces.lltok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(pieces),
                                                                       n_vocab=vocab, eos_token=list(eos))
        else:
            raise ValueError(f"a constraint cannot read a {type(tokenizer).__name__}'s tokens")
    return cached[vocab, eos]


class _Pieces:
    """A sentencepiece model as llguidance's TokenizerWrapper reads it: '▁' is a space, a byte
    piece <0xNN> that byte, a control or unknown piece special (llguidance's 0xFF prefix).
    Text the engine must spell (forced bytes) is tokenized greedily over these pieces:
    sentencepiece's own encoder would add its dummy prefix space and <unk> for what it lacks."""

    def __init__(self, tok: SentencePieceTokenizer, eos):
        sp, self.lltok = tok.sp, None
        self.eos_token_id, self.bos_token_id, self.sp = (eos[0] if eos else tok.eos_id), tok.bos_id, sp
        special = [i for i in range(tok.vocab_size) if sp.IsControl(i) or sp.IsUnknown(i)]
        self.special_token_ids = special
        self.tokens = [b"\xff" + sp.IdToPiece(i).encode() if i in special
                       else bytes([int(sp.IdToPiece(i)[3:5], 16)]) if sp.IsByte(i)
                       else sp.IdToPiece(i).replace("\u2581", " ").encode() for i in range(tok.vocab_size)]

    def __call__(self, text):
        if self.lltok is None:  # llguidance probes the call while it builds the tokenizer
            return []
        return self.lltok.greedy_tokenize(text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


class Matchers:
    """The matchers of one constraint clause over the rows of a run. The masks are built in a
    plain byte buffer the engine fills through a pointer, then viewed as a tensor: torch's
    per-operation cost on [1, 128] tensors would be most of the host's time per step."""

    def __init__(self, clause, lltok, rows: int, vocab: int, eos: tuple[int, ...]):
        import llguidance

        self.clause, self.rows, self.eos = clause, rows, eos
        first = llguidance.LLMatcher(lltok, grammar(clause.spec.constraint(clause.param_dict)), log_level=0)
        if first.is_error():
            raise ValueError(f"'{clause.canonical}': {first.get_error()}")
        self.words = -(-vocab // WORD)
        self.size = 4 * self.words  # bytes per row
        only = [0] * self.words
        for e in eos:
            only[e // WORD] |= 1 << (e % WORD)
        self.eos_only = b"".join(w.to_bytes(4, "little") for w in only)
        self.live, self.dead = {(): first}, set()

    def _buffer(self) -> tuple[bytearray, int]:
        buf = bytearray(b"\xff") * (self.rows * self.size)  # an ended row: every token (it writes padding)
        return buf, ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))

    def _empty(self, buf: bytearray, r: int) -> bool:
        return buf[r * self.size:(r + 1) * self.size].count(0) == self.size

    def _tensor(self, buf: bytearray) -> torch.Tensor:
        return torch.frombuffer(buf, dtype=torch.int32).view(self.rows, self.words)

    def start(self) -> torch.Tensor:
        """Every row's mask before the first token; a ValueError when no token can start."""
        m, (buf, ptr) = self.live[()], self._buffer()
        m.unsafe_compute_mask_ptr(ptr, self.size)
        if m.is_error() or self._empty(buf, 0):
            raise ValueError(f"'{self.clause.canonical}': no token of this model's tokenizer can start a "
                             "text it accepts (the tokenizer cannot spell it); "
                             "write the constraint with characters the tokenizer has")
        buf[self.size:] = buf[:self.size] * (self.rows - 1)
        return self._tensor(buf)

    def follow(self, new: list[list[int]], alive: list[bool] | None) -> torch.Tensor:
        """Every row's mask after the rows took their last token (`new`: each row's new tokens)."""
        rows: dict[tuple, list[int]] = {}  # a history and the rows that hold it
        for r, hist in enumerate(new):
            if alive is None or alive[r]:  # an ended row is not advanced (the search writes padding)
                rows.setdefault(tuple(hist), []).append(r)
        children: dict[tuple, list[tuple]] = {}
        for h in rows:
            children.setdefault(h[:-1], []).append(h)
        nxt, todo = {}, []
        for parent, hs in children.items():
            m = None if parent in self.dead else self.live.get(parent)
            for n, h in enumerate(hs):
                if m is None:
                    self.dead.add(h)
                    continue
                mine = m if n == len(hs) - 1 else m.deep_copy()  # copies before the last child moves it
                mine.consume_token(h[-1])
                nxt[h] = mine
                todo.append((mine, rows[h][0]))
        buf, ptr = self._buffer()
        if len(todo) == 1:  # the executor's threads cost more than one row's mask
            todo[0][0].unsafe_compute_mask_ptr(ptr + todo[0][1] * self.size, self.size)
        elif todo:
            _executor().unsafe_compute_mask_ptr(todo, ptr, self.size, self.rows)
        for m, r in todo:
            if m.is_error() or self._empty(buf, r):
                self.dead.add(tuple(new[r]))
                nxt.pop(tuple(new[r]))
        for h, rs in rows.items():
            first = self.eos_only if h in self.dead else buf[rs[0] * self.size:(rs[0] + 1) * self.size]
            for r in rs:
                buf[r * self.size:(r + 1) * self.size] = first
        self.live = nxt
        return self._tensor(buf)


def _executor():
    import llguidance

    if not _EXECUTOR:
        _EXECUTOR.append(llguidance.LLExecutor())
    return _EXECUTOR[0]


def hosts(plan, model, rows: int, eos: tuple[int, ...]) -> dict[int, Matchers]:
    """{stage index: its Matchers} for the plan's constraint stages (none: {})."""
    found = {i: c for i, c in enumerate(plan.recipe.stages) if c.spec.constraint is not None}
    if not found:
        return {}
    lltok = lltokenizer(model.tokenizer, model.config.vocab_size, eos)
    return {i: Matchers(c, lltok, rows, model.config.vocab_size, eos) for i, c in found.items()}


def masks(hosts: dict, sst: list, seq=None, p_len: int = 0, steps: int = 0, state=None) -> list:
    """The stages' states with each constraint's next mask written in (before the first step
    when `seq` is None; else after `steps` tokens, `seq` holding the rows as they are now)."""
    if not hosts:
        return sst
    new = None if seq is None else seq[:, p_len:p_len + steps].tolist()
    alive = None if state is None or not isinstance(state.get("alive"), torch.Tensor) else state["alive"].tolist()
    out = list(sst)
    for i, h in hosts.items():
        mask = h.start() if new is None else h.follow(new, alive)
        out[i] = {**sst[i], "mask": mask.to(sst[i]["mask"].device)}
    return out


def finish(hosts: dict, results: list, max_new: int) -> list:
    """The search's results with the sequences a constraint ended marked so (finish
    "constraint", the forced EOS off), and a warning for them and for a constraint that no
    sequence completed within `max`."""
    if not hosts:
        return results
    dead = set().union(*(h.dead for h in hosts.values()))
    out, ended = [], 0
    for found in results:
        rows = []
        for ids, score, why, *lp in found:
            if why == EOS and tuple(ids[:-1]) in dead:
                ids, why, ended = ids[:-1], "constraint", ended + 1
                lp = [x[:len(ids)] if isinstance(x, list) else x for x in lp]  # log-probs; draw, inclusion stay
            rows.append((ids, score, why, *lp))
        out.append(rows)
    names = " and ".join(f"'{h.clause.canonical}'" for h in hosts.values())
    if ended:
        warnings.warn(ConstraintWarning(f"{ended} sequence(s) ended because {names} allowed no "
                                        "token of this tokenizer after them (finish \"constraint\")"))
    if results and all(why == MAX for found in out for _, _, why, *_ in found):
        warnings.warn(ConstraintWarning(f"no sequence completed {names} within max {max_new}: each is "
                                        "a prefix it accepts; raise max"))
    return out
