"""The catalogue: every clause of the recipe language, in one place.

The parser's checks, `fmt`, `decode explain`, `--help`, docs/language.md and the
compiler's dispatch all read `CATALOGUE`; nothing else lists clauses. Add a clause here
(or `register` one from a plugin) and everything knows it.

    >>> lookup("topp").positional[0].hi
    1.0
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union


class _Required:
    """Sentinel default of a parameter the recipe must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

TYPES = ("int", "float", "str", "bool", "enum")
KINDS = ("search", "modifier", "logit", "stop", "limit", "control")


@dataclass(frozen=True)
class Param:
    """One argument of a clause: its type, default and allowed range.

    `default_from` names another parameter whose value is the default (beam's `return`
    defaults to its `k`); `variadic` collects one or more positional strings.

        >>> Param("p", "float", lo=0.0, hi=1.0, lo_open=True).describe_range()
        '0 < p <= 1'
    """

    name: str
    type: str
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    variadic: bool = False
    default_from: str | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"Param {self.name}: type must be one of {TYPES}, not {self.type!r}")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"Param {self.name}: an enum needs choices")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and self.default_from is None

    def in_range(self, value: float) -> bool:
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True

    def describe_range(self) -> str:
        """The allowed range in words, e.g. '0 < p <= 1', '' when unbounded."""
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else repr(x)

        lo = "" if self.lo is None else f"{num(self.lo)} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {num(self.hi)}"
        return f"{lo}{self.name}{hi}" if lo or hi else ""

    def describe_default(self) -> str:
        if self.default_from:
            return self.default_from.upper()
        if self.default is REQUIRED:
            return "required"
        return self.spell(self.default)

    def spell(self, value: Any) -> str:
        """Canonical spelling of a value of this parameter (enum names are bare)."""
        if self.type == "enum" and isinstance(value, str):
            return value
        return spell_value(value)


Sampling = Union[bool, Callable[[Mapping[str, Any]], bool]]


@dataclass(frozen=True)
class ClauseSpec:
    """A clause of the language: its arguments and what it means.

    `sampling` is a bool or a predicate on the resolved params (temp samples iff t > 0).
    `impl` is the dotted path of the compiler's implementation, or the implementation
    itself (a user stage's kernel: an object with `apply`, `STATIC` and optionally
    `prepare`, like a stage module); None: handled by the engine loop itself, e.g. `max`.
    `details` is a paragraph for the language reference (exact semantics).

        >>> lookup("temp").is_sampling({"t": 0.0})
        False
    """

    name: str
    kind: str
    doc: str
    positional: tuple[Param, ...] = ()
    keywords: tuple[Param, ...] = ()
    sampling: Sampling = False
    repeatable: bool = False
    reference: str | None = None
    cite: str | None = None
    impl: Any = None
    sampling_doc: str = field(default="", compare=False)
    details: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"clause {self.name}: kind must be one of {KINDS}, not {self.kind!r}")
        variadic = [p for p in self.positional if p.variadic]
        if variadic and self.positional[-1] is not variadic[-1] or len(variadic) > 1:
            raise ValueError(f"clause {self.name}: only the last positional may be variadic")

    @property
    def params(self) -> tuple[Param, ...]:
        return self.positional + self.keywords

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def is_sampling(self, params: Mapping[str, Any]) -> bool:
        return self.sampling(params) if callable(self.sampling) else bool(self.sampling)

    def usage(self) -> str:
        """The clause as one would write it, e.g. 'beam K [lenpen=1.0] ...'."""
        parts = [self.name]
        for p in self.positional:
            word = p.name.upper() + ("..." if p.variadic else "")
            parts.append(word if p.required else f"[{word}]")
        for p in self.keywords:
            parts.append(f"{p.name}={p.name.upper()}" if p.required else f"[{p.name}={p.describe_default()}]")
        return " ".join(parts)


def spell_value(value: Any) -> str:
    """Canonical spelling of one value (shared with `fmt`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value + 0.0)  # +0.0 turns -0.0 into 0.0
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, tuple):
        return " ".join(spell_value(v) for v in value)
    if value is None:
        return "none"
    raise TypeError(f"cannot spell {value!r}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(text: str) -> str:
    """Double-quote `text` with the language's escapes: quote('a"b') == '"a\\\\"b"'."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


CATALOGUE: dict[str, ClauseSpec] = {}


def register(spec: ClauseSpec, *, replace: bool = False) -> ClauseSpec:
    """Add a clause to the language (plugins call this); returns the spec.

        >>> register(ClauseSpec("mystage", "logit", "my stage", impl="plugin.mystage"))
    """
    if spec.name in CATALOGUE and not replace:
        raise ValueError(f"clause {spec.name!r} is already in the catalogue")
    CATALOGUE[spec.name] = spec
    return spec


def lookup(name: str) -> ClauseSpec | None:
    """The spec of clause `name`, or None if the language has no such clause."""
    return CATALOGUE.get(name)


def _keep() -> Param:
    return Param("keep", "int", 1, lo=1,
                 doc="always keep at least this many tokens (transformers' min_tokens_to_keep)")


def _t_positive(params: Mapping[str, Any]) -> bool:
    return params["t"] > 0


_S = "decode.compiler.search."
_L = "decode.compiler.stages."

for _spec in (
    ClauseSpec(
        "greedy", "search", "pick the most likely token at each step",
        reference="do_sample=False, num_beams=1", impl=_S + "greedy"),
    ClauseSpec(
        "sample", "search", "draw n independent samples from the (processed) distribution",
        positional=(Param("n", "int", 1, lo=1, doc="number of samples per prompt"),),
        sampling=True, reference="do_sample=True, num_return_sequences=N", impl=_S + "sample"),
    ClauseSpec(
        "beam", "search", "beam search keeping the K best partial sequences",
        positional=(Param("k", "int", lo=1, doc="beam width"),),
        keywords=(
            Param("lenpen", "float", 1.0,
                  doc="length penalty: final score = logprob / length**lenpen"),
            Param("early", "enum", False, choices=(False, True, "never"),
                  doc="stop when K hypotheses are done (true), on a heuristic (false), or never"),
            Param("return", "int", None, lo=1, default_from="k",
                  doc="how many finished beams to return (at most K)"),
        ),
        reference="num_beams=K, length_penalty=LENPEN, early_stopping=EARLY, num_return_sequences=RETURN",
        cite="Graves 2012; Sutskever et al. 2014", impl=_S + "beam",
        details="With a sampling stage this is beam sampling, as transformers' `do_sample=True, "
                "num_beams=K`: each step, 2·K continuations are drawn without replacement from the "
                "softmax of (beam score + processed log-prob) over all K·V candidates (Gumbel-top-k); "
                "those ending in EOS among the first K drawn become finished hypotheses, and the K "
                "best-scoring drawn ones that do not end continue. Truncation stages then keep at "
                "least 1 + (number of EOS ids) tokens, as in transformers."),
    ClauseSpec(
        "sbeam", "search",
        "stochastic beam search: K samples without replacement from the sequence tree (Gumbel-top-k)",
        positional=(Param("k", "int", lo=1, doc="number of sequences drawn without replacement"),),
        sampling=True, reference=None,
        cite="Kool, van Hoof & Welling 2019, Stochastic Beams and Where to Find Them",
        impl=_S + "sbeam",
        details="Each step, every child of every beam gets a perturbed score: a Gumbel with "
                "location log P(sequence so far), conditioned on its parent's score being the "
                "maximum over the parent's subtree; the K children with the largest perturbed "
                "scores survive (a finished beam is its own only child). The K sequences returned "
                "are a sample without replacement from the sequence distribution the logit stages "
                "define (fewer if fewer sequences exist), best log-probability first; `score` is "
                "the sequence's log-probability under that distribution."),
    ClauseSpec(
        "diverse", "modifier", "split the beams into groups penalised for choosing the same tokens",
        keywords=(
            Param("groups", "int", lo=1, doc="number of beam groups; must divide K"),
            Param("penalty", "float", 0.0, lo=0.0, doc="Hamming diversity penalty per earlier group's choice"),
        ),
        reference="num_beam_groups=GROUPS, diversity_penalty=PENALTY",
        cite="Vijayakumar et al. 2016, Diverse Beam Search", impl=_S + "diverse",
        details="The K beams form GROUPS groups of K/GROUPS. Each step the groups choose in "
                "order, and group g does, in this order: (1) the Hamming penalty: subtract PENALTY "
                "times the number of times each token was chosen by groups 0..g-1 at this step "
                "from its log-probabilities; (2) the recipe's logit stages, in written order; "
                "(3) it picks 2·K/GROUPS of its (K/GROUPS)·V continuations (beam score + processed "
                "log-prob): the best ones, or, when the recipe samples (diverse beam sampling, "
                "which transformers refuses), a draw without replacement from their softmax by "
                "Gumbel-top-k, kept in draw order. Continuations ending in EOS among the first "
                "K/GROUPS become finished hypotheses (score: sum of log-probs / length ** LENPEN); "
                "the first K/GROUPS that do not end continue. A group stops when it holds K/GROUPS "
                "hypotheses that no running beam can beat; the best RETURN hypotheses over all "
                "groups are returned. Without sampling this is transformers' group beam search."),
    ClauseSpec(
        "temp", "logit", "divide the logits by T (T=0 means argmax)",
        positional=(Param("t", "float", lo=0.0, doc="temperature"),),
        sampling=_t_positive, sampling_doc="when t > 0",
        reference="temperature=T", cite="Ackley, Hinton & Sejnowski 1985", impl=_L + "temp"),
    ClauseSpec(
        "topk", "logit", "keep only the K most likely tokens",
        positional=(Param("k", "int", lo=1, doc="tokens kept"),), keywords=(_keep(),),
        sampling=True, reference="top_k=K",
        cite="Fan, Lewis & Dauphin 2018, Hierarchical Neural Story Generation", impl=_L + "topk"),
    ClauseSpec(
        "topp", "logit", "nucleus: keep the smallest set of tokens whose probability reaches P",
        positional=(Param("p", "float", lo=0.0, hi=1.0, lo_open=True, doc="nucleus mass"),),
        keywords=(_keep(),), sampling=True, reference="top_p=P",
        cite="Holtzman et al. 2019, The Curious Case of Neural Text Degeneration", impl=_L + "topp"),
    ClauseSpec(
        "minp", "logit", "keep tokens whose probability is at least P times the top token's",
        positional=(Param("p", "float", lo=0.0, hi=1.0, doc="fraction of the top probability"),),
        keywords=(_keep(),), sampling=True, reference="min_p=P",
        cite="Nguyen et al. 2024, Turning Up the Heat: Min-p Sampling", impl=_L + "minp"),
    ClauseSpec(
        "typical", "logit", "locally typical sampling: keep tokens whose surprisal is closest to the entropy",
        positional=(Param("p", "float", lo=0.0, hi=1.0, lo_open=True, doc="mass kept"),),
        keywords=(_keep(),), sampling=True, reference="typical_p=P",
        cite="Meister et al. 2022, Locally Typical Sampling", impl=_L + "typical"),
    ClauseSpec(
        "epsilon", "logit", "drop tokens whose probability is below E",
        positional=(Param("e", "float", lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                          doc="probability cutoff"),),
        keywords=(_keep(),), sampling=True, reference="epsilon_cutoff=E",
        cite="Hewitt, Manning & Liang 2022, Truncation Sampling as Language Model Desmoothing",
        impl=_L + "epsilon"),
    ClauseSpec(
        "eta", "logit", "drop tokens below min(E, sqrt(E) * exp(-entropy))",
        positional=(Param("e", "float", lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                          doc="cutoff scale"),),
        keywords=(_keep(),), sampling=True, reference="eta_cutoff=E",
        cite="Hewitt, Manning & Liang 2022, Truncation Sampling as Language Model Desmoothing",
        impl=_L + "eta"),
    ClauseSpec(
        "topnsigma", "logit", "keep logits within N standard deviations of the largest",
        positional=(Param("n", "float", lo=0.0, lo_open=True, doc="width in standard deviations"),),
        sampling=True, reference=None,
        cite="Tang et al. 2024, Top-nσ: Not All Logits Are You Need", impl=_L + "topnsigma"),
    ClauseSpec(
        "repetition", "logit", "CTRL repetition penalty: shrink the logits of tokens already seen by R",
        positional=(Param("r", "float", lo=0.0, lo_open=True, doc="penalty (1 = none)"),),
        reference="repetition_penalty=R",
        cite="Keskar et al. 2019, CTRL", impl=_L + "repetition"),
    ClauseSpec(
        "presence", "logit", "subtract P from the logit of every token already seen",
        positional=(Param("p", "float", doc="additive penalty"),),
        reference=None, cite="OpenAI API presence_penalty (also vLLM)", impl=_L + "presence"),
    ClauseSpec(
        "frequency", "logit", "subtract F times its count from the logit of every token seen",
        positional=(Param("f", "float", doc="additive penalty per occurrence"),),
        reference=None, cite="OpenAI API frequency_penalty (also vLLM)", impl=_L + "frequency"),
    ClauseSpec(
        "norepeat", "logit", "forbid any n-gram of size N from appearing twice",
        positional=(Param("n", "int", lo=1, doc="n-gram size"),),
        reference="no_repeat_ngram_size=N",
        cite="Paulus, Xiong & Socher 2017; Klein et al. 2017 (OpenNMT)", impl=_L + "norepeat"),
    ClauseSpec(
        "minlen", "logit", "forbid end-of-sequence before N new tokens",
        positional=(Param("n", "int", lo=0, doc="minimum new tokens"),),
        reference="min_new_tokens=N", impl=_L + "minlen"),
    ClauseSpec(
        "ban", "logit", "forbid the token sequences of these strings",
        positional=(Param("words", "str", variadic=True, doc="one or more strings"),),
        reference="bad_words_ids=[ids(WORDS)...]", impl=_L + "ban"),
    ClauseSpec(
        "bias", "logit", "add B to the logit that completes the token sequence of TEXT",
        positional=(Param("text", "str", doc="the biased string"), Param("b", "float", doc="bias added")),
        repeatable=True, reference="sequence_bias={ids(TEXT): B}", impl=_L + "bias"),
    ClauseSpec(
        "max", "limit", "stop after at most N new tokens",
        positional=(Param("n", "int", 128, lo=1, doc="new tokens"),),
        reference="max_new_tokens=N"),
    ClauseSpec(
        "stop", "stop", "stop a sequence when it produces one of these strings",
        positional=(Param("strings", "str", variadic=True, doc="one or more stop strings"),),
        reference="stop_strings=[STRINGS...]"),
    ClauseSpec(
        "seed", "control", "seed the random number generator",
        positional=(Param("s", "int", lo=0, hi=2**64 - 1, doc="seed"),),
        reference="torch.manual_seed(S)"),
):
    register(_spec)


def sampling_clause_names() -> str:
    """'sample, sbeam, temp (when t > 0), ...': the clauses that make a recipe sample."""
    names = []
    for spec in CATALOGUE.values():
        if callable(spec.sampling):
            names.append(f"{spec.name} ({spec.sampling_doc})" if spec.sampling_doc else spec.name)
        elif spec.sampling:
            names.append(spec.name)
    return ", ".join(names)


_KIND_TITLES = {
    "search": "Search (exactly one; `greedy` when none is written)",
    "modifier": "Search modifiers",
    "logit": "Logit stages (applied in written order)",
    "limit": "Limits",
    "stop": "Stop rules",
    "control": "Control",
}


def reference_markdown() -> str:
    """The language reference (docs/language.md), generated from the catalogue."""
    from decode.dsl.ir import LANG_VERSION

    lines = [
        f"# The recipe language (version {LANG_VERSION})",
        "",
        "<!-- Generated by dsl.stages.reference_markdown(); do not edit by hand. -->",
        "",
        "A recipe is a sequence of clauses. A clause is a name, then positional values",
        "(numbers or \"strings\"), then `key=value` arguments (a value is a number, a string,",
        "`true`/`false`, or a bare name from the parameter's choices). A bare name anywhere",
        "else starts a new clause, so `topp 0.9 temp 0.7` is two clauses; `|` and newlines",
        "are optional separators; `#` starts a comment that runs to the end of the line.",
        "",
        "    beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7",
        "",
        "- Logit stages apply in the order written: `topp 0.9 temp 0.7` truncates the raw",
        "  distribution, then sharpens it.",
        "- Selection samples iff some clause samples: " + sampling_clause_names() + ".",
        "  Otherwise it is argmax. `temp 0` means argmax, whatever else the recipe says.",
        "- Strings use the escapes `\\n`, `\\t`, `\\r`, `\\\\`, `\\\"` and `\\uXXXX`.",
        "- Numbers: `4`, `-1`, `0.9`, `.5`, `1e-3`. A float argument accepts an integer.",
        "- `decode fmt` prints the canonical form: one line `a | b | c`, the search clause",
        "  first, then modifiers, logit stages in written order, `max`, `stop`, `seed`;",
        "  arguments equal to their default are left out.",
        "",
    ]
    for kind in KINDS:
        specs = [s for s in CATALOGUE.values() if s.kind == kind]
        if not specs:
            continue
        lines += [f"## {_KIND_TITLES[kind]}", ""]
        for spec in specs:
            lines += [f"### `{spec.usage()}`", "", spec.doc[0].upper() + spec.doc[1:] + ".", ""]
            for p in spec.params:
                rng = p.describe_range()
                extra = ["required" if p.required else f"default {p.describe_default()}"]
                if p.type == "enum":
                    extra.append("one of " + ", ".join(p.spell(c) for c in p.choices))
                if rng:
                    extra.append(rng)
                lines.append(f"- `{p.name}` ({p.type}{'...' if p.variadic else ''}; "
                             f"{'; '.join(extra)}): {p.doc}")
            facts = []
            if spec.sampling:
                facts.append("samples" + (f" {spec.sampling_doc}" if spec.sampling_doc else ""))
            if spec.repeatable:
                facts.append("may appear more than once")
            facts.append("transformers: " + (f"`{spec.reference}`" if spec.reference else "none"))
            if spec.cite:
                facts.append("source: " + spec.cite)
            lines += ["- " + "; ".join(facts) + ".", ""]
            if spec.details:
                lines += [spec.details, ""]
    lines += _USER_STAGES
    return "\n".join(lines).rstrip() + "\n"


_USER_STAGES = [
    "## User-defined stages",
    "",
    "A Python file declares a new logit stage with one decorator; `decode check --stage FILE`",
    "and `decode run --stage FILE` (or `decode.load_stages(FILE)`) load it before parsing, and",
    "from then on the clause is checked, formatted, explained and compiled like a built-in one.",
    "",
    "    import torch",
    "    import decode",
    "",
    "    @decode.stage(\"softcap\", args=[decode.Arg(\"cap\", float, lo=0.0, lo_open=True)],",
    "                  doc=\"squash the logits into (-CAP, CAP)\", cite=\"Gemma Team 2024\")",
    "    def softcap(logits, ctx, cap):",
    "        return cap * torch.tanh(logits / cap)",
    "",
    "The function gets the logits of every row [R, V] (log-probabilities under a beam search,",
    "raw logits otherwise), a `StepContext` with each row's token history (`tokens`, `valid`,",
    "`generated`, `length`, `new_len`, `eos`) and its arguments: numbers as 0-d tensors (so a",
    "sweep reuses the compiled step) unless declared `static=True`. It runs inside the compiled",
    "step: tensor code, no `.item()`; removed tokens become -inf. `decode.Arg(name, type,",
    "default, lo=, hi=, choices=, keyword=, static=, doc=)` declares an argument, `sampling=True`",
    "makes the clause a sampling one. recipes/plugins/edt.py is a complete example.",
    "",
    "A built-in stage is one kernel file in compiler/stages/ plus its entry in dsl/stages.py,",
    "whose `impl` names the file: the compiler dispatches through the catalogue.",
]
