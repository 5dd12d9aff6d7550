"""Chat templates: the jinja template an instruct checkpoint ships, rendered as transformers does.

    >>> tpl = find_template(Path("ckpt"), {"bos_token": "<s>"})
    >>> tpl.render([{"role": "user", "content": "Hi"}])       # the prompt text, generation prompt added

The template comes from `chat_template.jinja` beside the tokenizer, else from the
`chat_template` key of tokenizer_config.json (a string, or a list of named templates: the one
named "default"). It is rendered in a sandbox with transformers' settings (trim_blocks,
lstrip_blocks, loop controls, its `tojson`, `raise_exception` and `strftime_now`) and the
tokenizer's special tokens as variables, so the same messages give the same text as
`tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`; the
text is then tokenised without adding BOS (the template writes it), as transformers does.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from .errors import ModelError


class ChatTemplate:
    """A compiled chat template and the special-token strings it may use."""

    def __init__(self, text: str, source: str, specials: dict[str, str]):
        self.text, self.source, self.specials = text, source, dict(specials)
        self._template = None  # compiled on first use: loading a model needs no jinja2

    def _compiled(self):
        if self._template is not None:
            return self._template
        jinja2 = _jinja()
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            # transformers' tojson: jinja's own escapes HTML characters
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(self.text)
        except jinja2.exceptions.TemplateSyntaxError as e:
            raise ModelError(f"{self.source}: the chat template does not parse (template line {e.lineno}: "
                             f"{e.message}); fix the template or run without --chat") from None
        return self._template

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...])."""
        template = self._compiled()
        import jinja2

        try:
            return template.render(messages=messages, tools=None, documents=None,
                                         add_generation_prompt=add_generation_prompt, **self.specials)
        except jinja2.exceptions.TemplateError as e:
            raise ModelError(f"{self.source}: the chat template refused these messages ({e}); check the "
                             "roles and their order it expects, or run without --chat") from None


def find_template(folder: Path, specials: dict[str, str]) -> ChatTemplate | None:
    """The chat template shipped in `folder`, or None when it has none."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return ChatTemplate(jinja_file.read_text(encoding="utf-8"), str(jinja_file), specials)
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        found = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # the tokenizer's own reading of this file reports what is wrong with it
    if isinstance(found, list):  # named templates: transformers uses the one called "default"
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("default")
    return ChatTemplate(found, f"{config} (chat_template)", specials) if isinstance(found, str) else None


def _jinja():
    try:
        import jinja2
        import jinja2.ext  # noqa: F401  (loopcontrols)
    except ImportError:
        raise ModelError("--chat needs the `jinja2` package to render the model's chat template: "
                         "pip install 'decode-dsl[chat]'") from None
    return jinja2


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt ids of `messages` under the tokenizer's chat template (BOS as the template writes it)."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        where = getattr(tokenizer, "path", None)
        raise ModelError(f"this model's tokenizer ({where.parent if where else 'none'}) ships no chat "
                         "template (no chat_template.jinja, no chat_template in tokenizer_config.json): "
                         "it is not an instruct checkpoint; run without --chat and write the prompt yourself")
    return tokenizer.encode(template.render(messages), bos=False, special=True)
