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
    """The matchers of one constraint clause over the rows of a run. The masks are built in one
    plain byte buffer that the engine fills through a pointer and the step reads as a tensor
    viewing it: torch's per-operation cost on [1, 128] tensors, or a new buffer per step, would
    be most of the host's time per step."""

    def __init__(self, clause, lltok, rows: int, vocab: int, eos: tuple[int, ...], device="cpu", base: str = ""):
        import llguidance

        self.clause, self.rows, self.eos, self.device = clause, rows, eos, torch.device(device)
        first = llguidance.LLMatcher(lltok, grammar(clause.spec.constraint(clause.param_dict), base), log_level=0)
        if first.is_error():
            raise ValueError(f"'{clause.canonical}': {first.get_error()}")
        self.words = -(-vocab // WORD)
        self.size = 4 * self.words  # bytes per row
        only = [0] * self.words
        for e in eos:
            only[e // WORD] |= 1 << (e % WORD)
        self.eos_only = b"".join(w.to_bytes(4, "little") for w in only)
        self.live, self.dead = {(): first}, set()
        self.buf = self.ptr = self.mask = None

    def _view(self) -> torch.Tensor:
        """The rows' masks, one buffer for the whole run: written in place every step (no
        allocation), read by the step as the same tensor."""
        if self.buf is None:
            self.buf = bytearray(self.rows * self.size)
            self.ptr = ctypes.addressof((ctypes.c_char * len(self.buf)).from_buffer(self.buf))
            self.mask = torch.frombuffer(self.buf, dtype=torch.int32).view(self.rows, self.words)
        return self.mask

    def _empty(self, r: int) -> bool:
        return self.buf.count(0, r * self.size, (r + 1) * self.size) == self.size

    def start(self) -> torch.Tensor:
        """Every row's mask before the first token; a ValueError when no token can start."""
        m, mask = self.live[()], self._view()
        m.unsafe_compute_mask_ptr(self.ptr, self.size)
        if m.is_error() or self._empty(0):
            raise ValueError(f"'{self.clause.canonical}': no token of this model's tokenizer can start a "
                             "text it accepts (the tokenizer cannot spell it); "
                             "write the constraint with characters the tokenizer has")
        self.buf[self.size:] = self.buf[:self.size] * (self.rows - 1)
        return mask

    def follow(self, new: list[list[int]], alive: list[bool] | None) -> torch.Tensor:
        """Every row's mask after the rows took their last token (`new`: each row's new tokens).
        The tensor is the one `start` gave, rewritten: read it before the next call."""
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
        mask, buf, size = self._view(), self.buf, self.size
        if alive is not None and not all(alive):  # an ended row: every token (it writes padding)
            buf[:] = b"\xff" * len(buf)
        if len(todo) == 1:  # the executor's threads cost more than one row's mask
            todo[0][0].unsafe_compute_mask_ptr(self.ptr + todo[0][1] * size, size)
        elif todo:
            _executor().unsafe_compute_mask_ptr(todo, self.ptr, size, self.rows)
        for m, r in todo:
            if m.is_error() or self._empty(r):
                self.dead.add(tuple(new[r]))
                nxt.pop(tuple(new[r]))
        for h, rs in rows.items():
            first = self.eos_only if h in self.dead else None
            if first is None and len(rs) == 1:
                continue
            first = first or buf[rs[0] * size:(rs[0] + 1) * size]
            for r in rs:
                buf[r * size:(r + 1) * size] = first
        self.live = nxt
        return mask


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
    device = next(model.parameters()).device
    return {i: Matchers(c, lltok, rows, model.config.vocab_size, eos, device, plan.recipe.base)
            for i, c in found.items()}


def unspellable(recipe, model) -> list[tuple]:
    """(clause, why) for each constraint of `recipe` that no token of `model`'s tokenizer can
    start (`decode check --model`); a run would stop there with the same message."""
    from decode.compiler.engine import eos_ids

    out = []
    for c in (c for c in recipe.stages if c.spec.constraint is not None):
        try:
            lltok = lltokenizer(getattr(model, "tokenizer", None), model.config.vocab_size, eos_ids(model))
            Matchers(c, lltok, 1, model.config.vocab_size, eos_ids(model), base=recipe.base).start()
        except ValueError as e:
            out.append((c, str(e)))
    return out


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
        out[i] = {"mask": mask.to(h.device)}
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
