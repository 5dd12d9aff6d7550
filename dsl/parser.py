"""Text -> raw clauses (syntax only). `parse` in check.py adds the meaning.

Lark's errors become RecipeErrors that point at the text, as in Lark's own examples.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from decode.dsl.errors import RecipeError
from decode.dsl.ir import Arg, Choices, Span
from decode.dsl.spec import Call


class Symbol(str):
    """A bare name written as a keyword value (`early=never`), as opposed to a string."""


@dataclass(frozen=True)
class RawClause:
    name: str
    name_span: Span
    args: tuple[Arg, ...]
    span: Span


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    # The transformer runs inside the LALR parser: no parse tree is built.
    return Lark(grammar, parser="lalr", transformer=_ToRaw(), maybe_placeholders=False)


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}


def unescape(token: str, start: int) -> str:
    """The value of the string literal `token` found at offset `start`; a bad escape is a
    RecipeError at the escape."""
    body, out, i = token[1:-1], [], 0
    if "\\" not in body:  # the common case, kept cheap: a `ban` may hold 100k strings
        return body
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        at = start + 1 + i
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(_code_point(body[i + 2:i + 6], at))
            i += 6
        else:
            end = at + (2 + len(re.match(r"[0-9a-fA-F]{0,4}", body[i + 2:]).group()) if esc == "u" else 2)
            raise RecipeError(
                f"bad escape '{token[at - start:end - start]}' in a string: "
                "use \\n, \\t, \\r, \\\\, \\\" or \\uXXXX",
                Span(at, end))
    return "".join(out)


def _code_point(hex4: str, at: int) -> str:
    """The character of a \\uXXXX escape at offset `at`; a lone surrogate is refused, since no
    text holds one (the tokenizer could not encode it)."""
    code = int(hex4, 16)
    if 0xD800 <= code <= 0xDFFF:
        raise RecipeError(f"not valid Unicode at position {at}: \\u{hex4} is a lone surrogate "
                          "(half of a UTF-16 pair); write the character itself", Span(at, at + 6))
    return chr(code)


def nonfinite_error(word: str, span: Span) -> RecipeError:
    """`temp nan`, `keep=inf`, `-inf`: the language has no such numbers."""
    return RecipeError(f"{word} is not a number decode accepts; give a finite number", span)


NONFINITE = ("nan", "inf", "infinity")


def _number(token: Token) -> int | float:
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise RecipeError(f"number {token} is too large", _tok_span(token))
    return value + 0.0


def _tok_span(token: Token) -> Span:
    return Span(token.start_pos, token.end_pos)


@lru_cache(maxsize=1)
def string_pattern() -> str:
    """The grammar's STRING terminal (one string literal) as a regular expression."""
    return _lark().get_terminal("STRING").pattern.to_regexp()


def _value(token: Token) -> Arg:
    """A NUMBER or STRING token as a positional Arg."""
    value = _number(token) if token.type == "NUMBER" else unescape(token, token.start_pos)
    return Arg(None, value, _tok_span(token))


def _range(token: Token) -> Arg:
    """`lo..hi step s` as an Arg holding its values lo, lo+s, ... up to hi (hi included when
    it is reached, to 1e-9 of a step); a step of 0 or of the wrong sign is a RecipeError."""
    span = _tok_span(token)
    ends, step = token.split("step")
    lo_s, hi_s = re.fullmatch(r"(.+?)\.\.(.+)", ends.strip()).groups()
    lo, hi, st = (_number(Token("NUMBER", x.strip())) for x in (lo_s, hi_s, step))
    if st == 0 or (hi - lo) * st < 0:
        why = "a step of 0 never gets there" if st == 0 else "the step goes the other way"
        raise RecipeError(f"range {lo_s}..{hi_s} step {step.strip()}: {why}; step from {lo_s} toward "
                          f"{hi_s}, e.g. '{lo_s}..{hi_s} step {_suggested_step(lo, hi)}'", span)
    n = int((hi - lo) / st + 1e-9) + 1
    if n > MAX_RANGE:
        raise RecipeError(f"range {lo_s}..{hi_s} step {step.strip()} has {n} values (at most {MAX_RANGE}); "
                          "use a larger step", span)
    as_int = all(isinstance(x, int) for x in (lo, hi, st))
    values = tuple(lo + i * st if as_int else round(lo + i * st, 12) for i in range(n))
    return Arg(None, Choices(values, str(token)), span)


MAX_RANGE = 10_000


def _suggested_step(lo, hi) -> str:
    gap = hi - lo
    return str(gap / 4 if isinstance(gap, float) else (gap // 4 or (1 if gap > 0 else -1)))


def _values(token: Token) -> list[Arg]:
    """The positional Args of a NUMBER, STRING, RANGE or STRINGS (a run of strings) token."""
    if token.type == "RANGE":
        return [_range(token)]
    if token.type != "STRINGS":
        return [_value(token)]
    at = token.start_pos
    return [Arg(None, unescape(m.group(), at + m.start()), Span(at + m.start(), at + m.end()))
            for m in re.finditer(string_pattern(), token)]


class _ToRaw(Transformer):
    def start(self, clauses: list[RawClause]) -> list[RawClause]:
        return clauses

    def number(self, items: list[Token]) -> Arg:
        return _value(items[0])

    def string(self, items: list[Token]) -> Arg:
        return _value(items[0])

    def range(self, items: list[Token]) -> Arg:
        return _range(items[0])

    def set(self, items: list[Token]) -> Arg:
        span = Span(items[0].start_pos, items[-1].end_pos)
        numbers = [t for t in items if t.type == "NUMBER"]
        if not numbers:
            raise RecipeError("an empty set {}: a set lists the values to sweep, e.g. {0.8, 0.9}", span)
        written = "{" + ", ".join(str(t) for t in numbers) + "}"
        return Arg(None, Choices(tuple(_number(t) for t in numbers), written), span)

    def symbol(self, items: list[Token]) -> Arg:
        return Arg(None, Symbol(items[0]), _tok_span(items[0]))

    def keyword(self, items: list[Any]) -> Arg:
        key, value = items
        return Arg(str(key), value.value, Span(key.start_pos, value.span.end))

    def call(self, items: list[Any]) -> Arg:
        head, close = items[0], items[-1]
        args = [x if isinstance(x, Arg) else _value(x) for x in items[1:-1]
                if not (isinstance(x, Token) and x.type == "COMMA")]
        call = Call(str(head)[:-1], tuple(a.value for a in args), tuple(a.span for a in args))
        return Arg(None, call, Span(head.start_pos, close.end_pos))

    def clause(self, items: list[Any]) -> RawClause:
        name, args = items[0], []
        for x in items[1:]:
            if isinstance(x, Token):
                args += _values(x)
            else:
                args.append(x)
        args = tuple(args)
        end = max((a.span.end for a in args), default=name.end_pos)  # one Span, not one per arg
        return RawClause(str(name), _tok_span(name), args, Span(name.start_pos, end))


def parse_raw(text: str) -> list[RawClause]:
    """Syntax only: the written clauses with their spans, or a RecipeError."""
    try:
        return _lark().parse(text)
    except VisitError as err:
        if isinstance(err.orig_exc, RecipeError):
            raise err.orig_exc from None
        raise
    except UnexpectedInput as err:
        raise syntax_error(text, err) from None


_WORDS = {
    "NAME": "a clause name", "KEY": "a key=value argument", "NUMBER": "a number",
    "STRING": "a \"string\"", "VBAR": "|", "EQUAL": "=", "$END": "the end of the recipe",
    "LBRACE": "a {set} of numbers", "RBRACE": "'}'", "COMMA": "','", "RANGE": "a range lo..hi step s",
    "CALL": "a group such as any(...)", "CLOSE": "')'",
}


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "the end of the recipe"
    if token.type == "NUMBER":
        return f"number {token}"
    if token.type == "STRING":
        return f"string {token}"
    if token.type in ("NAME", "KEY"):
        return f"name '{token}'"
    return f"'{token}'"


def syntax_error(text: str, err: UnexpectedInput) -> RecipeError:
    """Turn Lark's UnexpectedInput into a RecipeError with a span and a plain message."""
    if isinstance(err, UnexpectedCharacters):
        return _bad_character(text, err.pos_in_stream)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    if tok.type == "STRINGS":  # a run of strings where none may stand: point at the first
        first = re.match(string_pattern(), tok)
        tok = Token("STRING", first.group(), start_pos=tok.start_pos,
                    end_pos=tok.start_pos + first.end())
    start = tok.start_pos if tok.start_pos is not None else len(text)
    if tok.type == "$END":
        start = len(text)
    end = start if tok.type == "$END" else (tok.end_pos if tok.end_pos is not None else start + 1)
    span = Span(start, end)
    prev = _previous_token(text, start)
    expected = set(err.expected) - {"STRINGS"}
    if tok.type in ("VBAR", "$END") and prev == "=":
        return RecipeError(f"missing value after '{_key_before(text, start)}='", span)
    if tok.type == "COMMA" and "RBRACE" not in expected:  # commas belong in {sets} and groups only
        return RecipeError("unexpected character ',': separate clauses with '|' or a space", span,
                           suggestion="|")
    if tok.type in ("LBRACE", "RANGE") and prev != "=" and "NUMBER" not in expected:
        return RecipeError(f"unexpected {_describe(tok)}: a set or range of numbers stands where a "
                           "number may", span)
    if tok.type == "EQUAL":
        return RecipeError("'=' must follow a key inside a clause, as in 'beam 4 lenpen=0.6'", span)
    if prev == "|" and tok.type in ("VBAR", "$END"):
        return RecipeError(f"expected a clause name after '|', found {_describe(tok)}", span)
    if tok.type == "VBAR" and "NAME" in expected and len(expected) <= 1:
        return RecipeError("a recipe cannot start with '|': write a clause name first", span)
    if tok.type in ("NUMBER", "STRING") and "KEY" in expected:
        return RecipeError(
            f"positional value {tok} after a key=value argument: write positional values first", span)
    if "NAME" in expected and tok.type in ("NUMBER", "STRING"):
        return RecipeError(f"expected a clause name, found {_describe(tok)}", span)
    if expected <= {"NUMBER", "STRING", "NAME"} and prev == "=":
        return RecipeError(f"expected a value after '=', found {_describe(tok)}", span)
    words = sorted(_WORDS.get(e, e) for e in expected)
    return RecipeError(f"unexpected {_describe(tok)}; expected {' or '.join(words)}", span)


def _previous_token(text: str, pos: int) -> str:
    """The last non-blank character before `pos`, skipping comments (good enough for errors)."""
    lines = text[:pos].split("\n")
    for line in reversed(lines):
        code = re.sub(r"#.*", "", line) if '"' not in line else line
        code = code.rstrip()
        if code:
            return code[-1]
    return ""


def _key_before(text: str, pos: int) -> str:
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t\r\n]*$", text[:pos])
    return m.group(1) if m else "key"


def _bad_character(text: str, pos: int) -> RecipeError:
    ch = text[pos]
    word = re.match(r"[+-]?(nan|inf(inity)?)\b", text[pos:pos + 10], re.IGNORECASE)
    if word:
        return nonfinite_error(word.group(), Span(pos, pos + len(word.group())))
    if ch == '"':
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end == -1 else line_end
        return RecipeError("unterminated string: close it with '\"' on the same line "
                           "(write a newline inside a string as \\n)", Span(pos, line_end))
    if ch.isdigit() or ch in "-.":
        m = re.match(r"[^\s|#\"=]+", text[pos:])
        word = m.group() if m else ch
        return RecipeError(f"malformed number '{word}': write numbers like 4, -1, 0.9, .5 or 1e-3",
                           Span(pos, pos + len(word)))
    shown = repr(ch)
    if ch in "()":
        return RecipeError(f"unexpected {shown}: a group is a name glued to '(', as in "
                           "any(\"big\", \"large\") or ids(5, 7)", Span(pos, pos + 1))
    if ch in ",;":
        return RecipeError(f"unexpected character {shown}: separate clauses with '|' or a space",
                           Span(pos, pos + 1), suggestion="|")
    if ch == "'":
        return RecipeError("unexpected character \"'\": strings use double quotes", Span(pos, pos + 1))
    return RecipeError(
        f"unexpected character {shown}: a recipe holds clause names, numbers, \"strings\", "
        "key=value, '|' and # comments", Span(pos, pos + 1))
