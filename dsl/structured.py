"""Structured output: what a constraint clause (`regex`, `json`, `grammar`, `choice`) accepts,
as a grammar of the llguidance engine, and the check that compiles it before a run.

A clause's catalogue entry says where its text is (`ClauseSpec.constraint(params) -> Source`);
this module reads the file it names, builds the engine's grammar and turns the engine's error
into a `Problem` pointing at the argument. llguidance is imported only when a recipe has a
constraint, so `decode check` of other recipes does not load it.

    >>> grammar(Source("regex", "[0-9]{4}", key="pattern")).startswith("{")
    True
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass

from decode.dsl.spec import Problem


# the folder a recipe's relative file paths start from while it is checked: a .dec file's own
# folder ("" is the working directory); a Recipe keeps it as `base`
BASE: ContextVar[str] = ContextVar("decode_recipe_folder", default="")

# JSON as json.dumps writes it: ", " and ": ", no other whitespace (a model free to add
# whitespace can add it forever); a schema's own "x-guidance" options override this
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Source:
    """Where a constraint's text is: `format` is llguidance's (`regex`, `json_schema`, `lark`,
    `choice`), `text` the text itself, or, with `file` true, the path of a file holding it
    (relative to the recipe file's folder, or to the working directory for recipe text); `key` is the argument to point at when it is wrong,
    `what` how a message names it ("regex", "JSON schema", "Lark grammar")."""

    format: str
    text: str
    key: str | None = None
    file: bool = False
    what: str = "constraint"
    wrapped: bool = False  # the engine wraps the text in a Lark grammar of its own (regex, choice)


class ConstraintError(ValueError):
    """A constraint the engine cannot compile; `key` is the argument to point at."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def path_of(src: Source, base: str | None = None) -> str:
    """The path of `src`'s file: as written when absolute, else under `base` (default: the
    folder of the recipe being checked; "" the working directory)."""
    base = BASE.get() if base is None else base
    return src.text if not base or os.path.isabs(src.text) else os.path.join(base, src.text)


def text_of(src: Source, base: str | None = None) -> str:
    """The constraint's text: the file's contents when `src.file`, else `src.text`."""
    if not src.file:
        return src.text
    path = path_of(src, base)
    if not os.path.isfile(path):
        base = BASE.get() if base is None else base
        where = (f"the recipe file's folder '{base}'" if base else f"the working directory {os.getcwd()}")
        raise ConstraintError(f"no such {src.what} file '{src.text}' (a relative path starts from {where}): "
                              "give the path of an existing file", src.key)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConstraintError(f"cannot read the {src.what} file '{src.text}': {e}", src.key) from None


def digest(src: Source, base: str = "") -> str:
    """sha256 of the file `src` names (what a recipe's fingerprint holds of it), or
    "unreadable" when it cannot be read now."""
    try:
        with open(path_of(src, base), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "unreadable"


def grammar(src: Source, base: str | None = None) -> str:
    """The llguidance grammar of `src` (JSON text), checked: a ConstraintError with the
    engine's message (and the file) when it does not compile. `base`: as `path_of`'s."""
    import llguidance

    text = text_of(src, base)
    where = f"the {src.what} file '{src.text}'" if src.file else f"the {src.what}"
    try:
        if src.format == "json_schema":
            json.loads(text)  # the engine's own message for bad JSON names no line
            g = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=JSON_LAYOUT)
        else:
            g = llguidance.grammar_from(src.format, text)
    except ValueError as e:
        raise ConstraintError(f"{where} is not valid: {_plain(str(e))}", src.key) from None
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(g, None)
    if failed:
        error = messages[0]
        raise ConstraintError(f"{where} is not valid: {_plain(error, src.wrapped)}", src.key)
    return g


def _plain(message: str, wrapped: bool = False) -> str:
    """The engine's message without the Lark wrapper it builds around a regex (a line
    `1 | start: /.../` and its caret), which is not what the user wrote."""
    lines = message.rstrip().splitlines()
    if wrapped:
        cut = next((i for i, x in enumerate(lines) if x.lstrip().startswith("1 | start:")), len(lines))
        lines = lines[:cut]
        lines[:1] = [re.sub(r"^at \d+\(\d+\): ", "", lines[0])] if lines else []
    return "\n".join(lines).strip()


def check(clause, clauses: tuple) -> Problem | None:
    """The catalogue's `check` of a constraint clause: it compiles, and it is the recipe's only one."""
    others = [c for c in clauses if c is not clause and c.spec.constraint is not None]
    if others and clauses.index(others[0]) < clauses.index(clause):
        return Problem(f"a recipe holds one constraint; '{others[0].canonical}' is already one: "
                       "write what both accept as one regex or grammar")
    try:
        grammar(clause.spec.constraint(clause.param_dict))
    except ConstraintError as e:
        return Problem(str(e), key=e.key)
    return None
