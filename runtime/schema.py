"""The settings files a checkpoint comes with, each checked against a small declarative schema.

A schema maps a key to (kind, required). One function, `validate`, checks a parsed file
against it, so that a config that parses but is wrong (`[]`, `"hidden_size": "32"`,
`"num_attention_heads": 0`) is one ModelError naming the file, the key and what was
expected, instead of a TypeError deep in the loader. Keys a schema does not name are
left alone (real configs carry many we do not use); `null` counts as absent.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ModelError


@dataclass(frozen=True)
class Kind:
    """What a value must be: a test and its description for the message."""

    expect: str
    ok: Callable[[Any], bool]


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _list_of(v, kind: "Kind") -> bool:
    return isinstance(v, list) and all(kind.ok(x) for x in v)


def _token(v) -> bool:
    return isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("content"), str))


POS_INT = Kind("a positive integer", lambda v: _int(v) and v > 0)
NONNEG_INT = Kind("an integer >= 0", lambda v: _int(v) and v >= 0)
INT = Kind("an integer", _int)
POS_NUM = Kind("a positive number", lambda v: _num(v) and v > 0)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
TEXT = Kind("a string", lambda v: isinstance(v, str))
TEXTS = Kind("a list of strings", lambda v: _list_of(v, TEXT))
OBJECT = Kind('an object such as {"rope_type": "linear", "factor": 2.0}',
              lambda v: isinstance(v, dict))
TOKEN_IDS = Kind("a token id (an integer >= 0) or a list of them",
                 lambda v: NONNEG_INT.ok(v) or _list_of(v, NONNEG_INT))
TOKEN = Kind('a string or an object {"content": "..."}', _token)
WEIGHT_MAP = Kind("an object mapping tensor names to shard file names",
                  lambda v: isinstance(v, dict) and all(isinstance(f, str) for f in v.values()))

Schema = dict[str, tuple[Kind, bool]]  # key -> (kind, required)

_SPECIAL_IDS: Schema = {"bos_token_id": (NONNEG_INT, False), "eos_token_id": (TOKEN_IDS, False),
                        "pad_token_id": (INT, False)}  # early llama configs say -1 for "none"

HF_CONFIG: Schema = {
    "model_type": (TEXT, False), "architectures": (TEXTS, False),
    "vocab_size": (POS_INT, True), "hidden_size": (POS_INT, True),
    "intermediate_size": (POS_INT, True), "num_hidden_layers": (POS_INT, True),
    "num_attention_heads": (POS_INT, True), "num_key_value_heads": (POS_INT, False),
    "head_dim": (POS_INT, False), "max_position_embeddings": (POS_INT, False),
    "rms_norm_eps": (POS_NUM, False), "rope_theta": (POS_NUM, False),
    "rope_scaling": (OBJECT, False), "tie_word_embeddings": (BOOL, False),
    "hidden_act": (TEXT, False), "attention_bias": (BOOL, False), "mlp_bias": (BOOL, False),
    "sliding_window": (NONNEG_INT, False), **_SPECIAL_IDS,
}
GENERATION_CONFIG: Schema = dict(_SPECIAL_IDS)
INDEX: Schema = {"weight_map": (WEIGHT_MAP, True)}
META_PARAMS: Schema = {
    "dim": (POS_INT, True), "n_layers": (POS_INT, True), "n_heads": (POS_INT, True),
    "n_kv_heads": (POS_INT, False), "norm_eps": (POS_NUM, False), "rope_theta": (POS_NUM, False),
    "use_scaled_rope": (BOOL, False), "rope_scaling_factor": (POS_NUM, False),
    "max_seq_len": (POS_INT, False),
}
TOKENIZER_CONFIG: Schema = {"bos_token": (TOKEN, False), "eos_token": (TOKEN, False),
                            "pad_token": (TOKEN, False), "unk_token": (TOKEN, False)}
ROPE_TYPE: Schema = {"rope_type": (TEXT, False), "type": (TEXT, False)}
ROPE_SCALING: dict[str, Schema] = {  # by rope type; model.rope_inv_freq refuses other types
    "linear": {"factor": (POS_NUM, True)},
    "llama3": {"factor": (POS_NUM, True), "low_freq_factor": (POS_NUM, True),
               "high_freq_factor": (POS_NUM, True),
               "original_max_position_embeddings": (POS_INT, True)},
}


def validate(doc: Any, schema: Schema, file: Path, prefix: str = "") -> dict:
    """`doc` itself when it is an object whose keys fit `schema`, else a ModelError.

        >>> validate({"dim": "32"}, META_PARAMS, Path("params.json"))
        Traceback (most recent call last):
        ModelError: params.json: key 'dim' is '32', expected a positive integer. ...
    """
    fix = "Fix that key or re-download the file."
    if not isinstance(doc, dict):
        raise ModelError(f"{file}{' key ' + repr(prefix[:-1]) if prefix else ''} holds a JSON "
                         f"{_json_type(doc)}, expected an object {{...}} of settings. {fix}")
    for key, (kind, required) in schema.items():
        value = doc.get(key)
        if value is None:
            if required:
                raise ModelError(f"{file} lacks the key {prefix + key!r} ({kind.expect}); it is "
                                 f"not a complete config. {fix}")
        elif not kind.ok(value):
            raise ModelError(f"{file}: key {prefix + key!r} is {_show(value)}, expected "
                             f"{kind.expect}. {fix}")
    return doc


def read_json(file: Path, schema: Schema) -> dict:
    """Parse `file` as JSON and validate it; any failure is a ModelError naming the file."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{file} could not be read as JSON ({e}). Re-download it.") from None
    return validate(doc, schema, file)


def _json_type(v) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _show(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."
