"""Tokenizers: sentencepiece `tokenizer.model`, or `tokenizer.json` via the optional `tokenizers`.

Both behave like transformers' defaults: `encode` prepends BOS (LlamaTokenizer's
add_bos_token=True), `decode` skips special tokens (skip_special_tokens=True).
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ModelError
from .schema import TOKENIZER_CONFIG, read_json


class SentencePieceTokenizer:
    """A llama sentencepiece model (legacy LlamaTokenizer behaviour).

        >>> tok = SentencePieceTokenizer("ckpt/tokenizer.model")
        >>> tok.decode(tok.encode("ROMEO:"))
        'ROMEO:'
    """

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = Path(path)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise ModelError(
                f"{self.path} is not a sentencepiece model ({e}). Llama-3 ships a tiktoken "
                f"file under this name; use the HF conversion with tokenizer.json instead."
            ) from None
        self.vocab_size = self.sp.GetPieceSize()
        self.bos_id = _or_none(self.sp.bos_id())
        self.eos_id = _or_none(self.sp.eos_id())
        self.pad_id = _or_none(self.sp.pad_id())
        self._special = {i for i in range(self.vocab_size)
                         if self.sp.IsControl(i) or self.sp.IsUnknown(i)}
        self.specials = {name: self.sp.IdToPiece(i) for name, i in (
            ("bos_token", self.bos_id), ("eos_token", self.eos_id),
            ("unk_token", _or_none(self.sp.unk_id())), ("pad_token", self.pad_id)) if i is not None}
        self.chat_template = None  # set by the loader (chat.py)

    def encode(self, text: str, bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of `text`, BOS first if `bos`. With `special`, the special tokens' strings
        in the text ("<s>", "</s>", ...) become their ids, as transformers' LlamaTokenizer reads
        them (a chat template writes them); otherwise they are plain text."""
        if not special:
            ids = self.sp.EncodeAsIds(text)
        else:
            pieces = re.split("(" + "|".join(map(re.escape, sorted(
                self.specials.values(), key=len, reverse=True))) + ")", text) if self.specials else [text]
            ids = [i for n, part in enumerate(pieces) if part
                   for i in ([self.sp.PieceToId(part)] if n % 2 else self.sp.EncodeAsIds(part))]
        return [self.bos_id] + ids if bos and self.bos_id is not None else ids

    def decode(self, ids) -> str:
        pieces = [self.sp.IdToPiece(int(i)) for i in ids if int(i) not in self._special]
        if not pieces:
            return ""
        # LlamaTokenizer strips the prefix space of the first piece before decoding.
        if pieces[0].startswith("\u2581"):
            pieces[0] = pieces[0][1:]
        return self.sp.DecodePieces(pieces)


class HFTokenizer:
    """A `tokenizer.json` (HF fast tokenizer), read with the optional `tokenizers` package.

        >>> tok = HFTokenizer("ckpt/tokenizer.json")
        >>> tok.encode("hi")[0] == tok.bos_id
        True

    BOS/EOS/PAD come from `tokenizer_config.json` beside the file when it names them.
    """

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelError(
                f"{path} needs the `tokenizers` package, which is not installed. "
                f"Install it with `pip install decode-dsl[hf]` (or `pip install tokenizers`)."
            ) from None
        self.path = Path(path)
        try:
            self.tk = Tokenizer.from_file(str(self.path))
        except Exception as e:  # tokenizers raises a bare Exception on bad json
            raise ModelError(f"{self.path} is not a valid tokenizer.json ({e}).") from None
        self.vocab_size = self.tk.get_vocab_size(with_added_tokens=True)
        names = _special_names(self.path.parent / "tokenizer_config.json")
        self.bos_id = self._id(names.get("bos_token"), "<s>", "<|begin_of_text|>")
        self.eos_id = self._id(names.get("eos_token"), "</s>", "<|end_of_text|>")
        self.pad_id = self._id(names.get("pad_token"))
        unk = self._id(names.get("unk_token"), "<unk>")
        self.specials = {name: self.tk.id_to_token(i) for name, i in (
            ("bos_token", self.bos_id), ("eos_token", self.eos_id), ("unk_token", unk),
            ("pad_token", self.pad_id)) if i is not None}
        self.chat_template = None  # set by the loader (chat.py)

    def _id(self, *names) -> int | None:
        for n in names:
            if n is not None and self.tk.token_to_id(n) is not None:
                return self.tk.token_to_id(n)
        return None

    def encode(self, text: str, bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of `text`, BOS first if `bos`; the tokenizer's added tokens written in the
        text always become their ids (the `tokenizers` library reads them so)."""
        ids = self.tk.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if bos and self.bos_id is not None else ids

    def decode(self, ids) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=True)


def _or_none(i: int) -> int | None:
    return None if i < 0 else i


def _special_names(config: Path) -> dict:
    """{"bos_token": "<s>", ...} from tokenizer_config.json (absent file: {})."""
    if not config.exists():
        return {}
    doc = read_json(config, TOKENIZER_CONFIG)
    return {key: val["content"] if isinstance(val, dict) else val
            for key, val in ((k, doc.get(k)) for k in TOKENIZER_CONFIG) if val is not None}
