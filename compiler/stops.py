"""Stop strings: checked on decoded text, so a stop string split across tokens is found.

The engine asks every few steps which rows' new text already contains a stop string (a
row that has one may finish early), and at the end cuts each returned sequence after the
first token whose text completes a stop string; such a sequence finishes with "stop".
"""
from __future__ import annotations


class StopStrings:
    def __init__(self, strings: tuple[str, ...], tokenizer):
        if strings and tokenizer is None:
            from decode.runtime.errors import ModelError
            raise ModelError("the recipe has `stop` strings but this model has no tokenizer to decode "
                             "text with; put tokenizer.model next to the weights or drop `stop`")
        self.strings = tuple(strings)
        self.tok = tokenizer

    def hit(self, ids: list[int]) -> bool:
        text = self.tok.decode(ids)
        return any(s in text for s in self.strings)

    def cut(self, ids: list[int]) -> int | None:
        """Number of tokens up to and including the one completing the first stop string."""
        if not self.hit(ids):
            return None
        for n in range(1, len(ids) + 1):
            if self.hit(ids[:n]):
                return n
        return len(ids)
