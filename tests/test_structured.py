"""Structured output (issue 19): regex, json, grammar and choice constraints.

Parity: greedy and beam search under a constraint give transformers 4.55.4's tokens (and
beam scores) when its generate gets `prefix_allowed_tokens_fn` built from the same
llguidance matcher; the masks follow beams, EOS is allowed exactly when the constraint
accepts, and what cannot be done is a message naming the clause.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import decode
from decode.compiler import constraint, step_cache
from decode.compiler.stages._constrain import allowed

DEMO = Path(__file__).resolve().parent.parent / "runtime" / "demo"
EOS = 2
PROMPTS = ["ROMEO:", "JULIET:\nO Romeo"]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                            "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                            "home": {"type": "object",
                                                     "properties": {"city": {"enum": ["Verona", "Mantua"]}},
                                                     "required": ["city"]}},
          "required": ["name", "age", "home"], "additionalProperties": False}
INLINE = json.dumps(json.dumps(SCHEMA))  # the schema as a recipe string
CASES = ['regex "[0-9]{4}-[0-9]{2}-[0-9]{2}"', 'choice " Romeo" " Juliet" " Nurse"',
         f"json schema={INLINE}", 'grammar "start: expr\\nexpr: NUM | expr OP expr\\nOP: /[-+*]/\\nNUM: /[0-9]+/"']


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The demo model's matrices are small: a second thread would only spin (on a loaded
    machine that multiplied this file's CPU time by ten)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours():
    return decode.load()


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaForCausalLM.from_pretrained(DEMO, torch_dtype=torch.float32).eval()


def matcher(model, recipe: str):
    """A fresh llguidance matcher of the recipe's constraint, on the model's tokenizer."""
    clause = next(c for c in decode.parse(recipe).stages if c.spec.constraint is not None)
    lltok = constraint.lltokenizer(model.tokenizer, model.config.vocab_size, (EOS,))
    return constraint.Matchers(clause, lltok, 1, model.config.vocab_size, (EOS,))


def allowed_fn(model, recipe: str, p_len: int):
    """transformers' prefix_allowed_tokens_fn from the same matcher: llguidance's own matcher
    per prefix (the parent's, copied, takes the last token) and the ids its mask allows."""
    vocab = model.config.vocab_size
    matchers, ids = {(): matcher(model, recipe).live[()]}, {}

    def state(new: tuple):
        if new not in matchers:
            matchers[new] = state(new[:-1]).deep_copy()
            matchers[new].consume_token(new[-1])
        return matchers[new]

    def fn(batch_id, input_ids):
        new = tuple(input_ids[p_len:].tolist())
        if new not in ids:
            m, mask = state(new), torch.zeros((1, -(-vocab // 32)), dtype=torch.int32)
            m.unsafe_compute_mask_ptr(mask.data_ptr(), 4 * mask.shape[1])
            ids[new] = [] if m.is_error() else allowed(mask, vocab)[0].nonzero()[:, 0].tolist()
        return ids[new]

    return fn


def replay(m, new) -> torch.Tensor:
    """The mask of a matcher after `new`, fed one token at a time as a run feeds it."""
    mask = m.start()
    for i in range(1, len(new) + 1):
        mask = m.follow([list(new[:i])], None)
    return mask


def reference(hf, model, recipe, prompt, max_new, **kw):
    ids = torch.tensor([model.tokenizer.encode(prompt)])
    out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                      do_sample=False, eos_token_id=EOS, pad_token_id=EOS, top_k=None, top_p=None,
                      temperature=None, prefix_allowed_tokens_fn=allowed_fn(model, recipe, ids.shape[1]),
                      return_dict_in_generate=True, output_scores=True, **kw)
    seqs = []
    for row in out.sequences[:, ids.shape[1]:].tolist():
        seqs.append(row[: row.index(EOS) + 1] if EOS in row else row)
    scores = out.sequences_scores.tolist() if getattr(out, "sequences_scores", None) is not None else None
    return seqs, scores


@pytest.mark.parametrize("case", CASES)
def test_greedy_under_a_constraint_equals_transformers_with_the_same_matcher(ours, hf, case):
    for prompt in PROMPTS:
        seqs, _ = reference(hf, ours, case, prompt, 24)
        got = decode.generate(ours, f"{case} | max 24", [prompt], compile=False)[0].sequences
        assert [s.ids for s in got] == seqs, (case, prompt)


@pytest.mark.parametrize("case", CASES[:2] + CASES[3:])
def test_beam_under_a_constraint_equals_transformers_ids_and_scores(ours, hf, case):
    seqs, scores = reference(hf, ours, case, PROMPTS[0], 12, num_beams=4, num_return_sequences=4)
    got = decode.generate(ours, f"beam 4 | {case} | max 12", [PROMPTS[0]], compile=False)[0].sequences
    assert [s.ids for s in got] == seqs
    assert [s.score for s in got] == pytest.approx(scores, abs=1e-4)


def compiled_and_eager(model, recipe: str):
    compiled = decode.generate(model, recipe, PROMPTS)
    eager = decode.generate(model, recipe, PROMPTS, compile=False)
    return [[s.ids for s in c.sequences] for c in compiled], [[s.ids for s in c.sequences] for c in eager]


def test_compiled_equals_eager_and_one_graph_serves_every_regex(ours):
    """The pattern is no part of the graph: a second regex builds no step, compiled or eager."""
    got, want = compiled_and_eager(ours, f"greedy | {CASES[0]} | max 12")
    assert got == want
    built = step_cache.built()
    got, want = compiled_and_eager(ours, 'greedy | regex "[A-Z][a-z]+[,.!]" | max 12')
    assert got == want and step_cache.built() == built


@pytest.mark.slow
@pytest.mark.parametrize("search", ["beam 3", "sample 2 | seed 4", "beam 4 | diverse groups=2 penalty=1"])
def test_compiled_equals_eager_for_searches_that_copy_or_draw(ours, search):
    for case in CASES[:2]:  # a graph per clause kind and search: two kinds keep it to minutes
        got, want = compiled_and_eager(ours, f"{search} | {case} | max 12")
        assert got == want, (search, case)


def test_dola_under_a_constraint_equals_transformers_where_its_filter_keeps_an_allowed_token(ours, hf):
    case = 'regex "[A-Za-z ,.!?;:\\n\'-]*"'
    for prompt in PROMPTS:
        seqs, _ = reference(hf, ours, case, prompt, 16, dola_layers="high")
        got = decode.generate(ours, f"dola layers=high | {case} | max 16", [prompt], compile=False)[0].sequences
        assert [s.ids for s in got] == seqs, prompt


def test_dola_keeps_the_constraint_where_its_filter_allows_none_of_its_tokens(ours, hf):
    """After "ROMEO:" DoLa's plausibility filter keeps no digit: transformers takes token 0
    (argmax of -inf), which the matcher refuses; decode ranks the digits by the final layer."""
    with pytest.raises(ValueError, match="returned an empty list"):
        reference(hf, ours, CASES[0], PROMPTS[0], 12, dola_layers="high")
    s = decode.generate(ours, f"dola layers=high | {CASES[0]} | max 12", PROMPTS[:1], compile=False)[0].sequences[0]
    assert s.finish == "eos" and re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", bytes_of(ours, s.ids))


def test_transform_refuses_a_constraint_saying_what_to_use(ours):
    logits, ids = torch.zeros(1, ours.config.vocab_size), torch.tensor([[1, 5]])
    with pytest.raises(ValueError, match="'choice \"a\"' is a constraint.*decode.generate"):
        decode.transform('topk 5 | choice "a"', logits, ids, model=ours)


def test_eos_is_allowed_exactly_when_the_constraint_accepts(ours):
    m = matcher(ours, 'regex "[ab]{2,3}"')
    mask, text = m.start(), []
    ids = {t: ours.tokenizer.sp.PieceToId(t) for t in "ab"}
    for step in range(3):
        assert bool(allowed(mask, ours.config.vocab_size)[0, EOS]) == (len(text) >= 2)
        text.append(ids["ab"[step % 2]])
        mask = m.follow([list(text)], None)
    assert allowed(mask, ours.config.vocab_size)[0].nonzero()[:, 0].tolist() == [EOS]  # done: EOS alone


def test_masks_follow_the_rows_history_when_beams_reorder(ours):
    choice, v = 'choice " Juliet" " Benvolio"', ours.config.vocab_size
    r, j = (ours.tokenizer.encode(x, bos=False) for x in (" Benvolio", " Juliet"))
    m = matcher(ours, choice)
    m.rows = 2
    m.start()
    m.follow([r[:1], j[:1]], None)
    got = allowed(m.follow([j[:2], r[:2]], None), v)  # the beams swapped places
    for row, hist in enumerate([j[:2], r[:2]]):
        assert torch.equal(got[row], allowed(replay(matcher(ours, choice), hist), v)[0])
    assert not torch.equal(got[0], got[1])


@pytest.mark.parametrize("search", ["greedy", "sample 3 | seed 1", "beam 3", "beam 4 | diverse groups=2 penalty=1",
                                    "sbeam 3 | seed 2", "beam 3 | topp 0.9 | seed 3", "contrastive k=3 alpha=0.5",
                                    "beam 4 | siblings 1", "beam 4 | force \" love\"", "dola layers=high",
                                    "sample 2 | dola | seed 5"])
def test_every_search_keeps_the_constraint(ours, search):
    pattern = "\n?(To|So|No|I) [a-z]+[.!]"
    for c in decode.generate(ours, f"regex \"\\n?(To|So|No|I) [a-z]+[.!]\" | {search} | repetition 1.2 | max 10", PROMPTS,
                             compile=False):
        assert c.sequences
        for s in c.sequences:
            text = bytes_of(ours, s.ids)
            assert re.fullmatch(pattern, text) if s.finish == "eos" else prefix_ok(pattern, text), (search, text)


def bytes_of(model, ids) -> str:
    """The text the matcher read (the tokens' bytes as llguidance sees them), EOS left out."""
    lltok = constraint.lltokenizer(model.tokenizer, model.config.vocab_size, (EOS,))
    return lltok.decode_bytes([i for i in ids if i != EOS]).decode("utf-8")


def prefix_ok(pattern: str, text: str) -> bool:
    """`text` is a prefix of some string the regex matches (the regex module's partial match)."""
    regex = pytest.importorskip("regex")
    return regex.fullmatch(pattern, text, partial=True) is not None


def test_constraint_errors_name_the_clause_the_file_and_the_reason(tmp_path):
    with pytest.raises(decode.RecipeError, match="(?s)regex is not valid.*unclosed group") as e:
        decode.parse('greedy | regex "(ab"')
    assert e.value.span.start == len('greedy | regex ')
    with pytest.raises(decode.RecipeError, match="no such JSON schema file 'missing.json'"):
        decode.parse('json schema="missing.json"')
    bad = tmp_path / "bad.lark"
    bad.write_text("start: expr\nexpr: NUMBER\n")
    with pytest.raises(decode.RecipeError, match=f"(?s)Lark grammar file '{re.escape(str(bad))}' is not valid.*NUMBER"):
        decode.parse(f'grammar "{bad}"')
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "strnig"}')
    with pytest.raises(decode.RecipeError, match="(?s)JSON schema file .*s.json. is not valid.*strnig"):
        decode.parse(f'json schema="{schema}"')
    schema.write_text('{"type": ')
    with pytest.raises(decode.RecipeError, match="is not valid"):
        decode.parse(f'json schema="{schema}"')
    with pytest.raises(decode.RecipeError, match="one constraint"):
        decode.parse('regex "a" | choice "b"')


def test_a_ban_of_every_allowed_token_is_a_message_naming_the_ban(ours):
    first = allowed(matcher(ours, 'choice "yes"').start(), ours.config.vocab_size)[0].nonzero()[:, 0].tolist()
    ids = " ".join(map(str, first))
    with pytest.raises(ValueError, match=f"step 0, prompt 0: every token was removed by 'suppress {ids}'"):
        decode.generate(ours, f'choice "yes" | suppress {ids} | max 4', PROMPTS[:1], compile=False)


def test_a_constraint_no_string_completes_within_max_warns(ours):
    with pytest.warns(constraint.ConstraintWarning, match="within max 3"):
        out = decode.generate(ours, 'regex "[a-z]{20}" | max 3', PROMPTS[:1], compile=False)
    assert out[0].sequences[0].finish == "max"


@pytest.fixture(scope="module")
def no_bytes(tmp_path_factory):
    """A model whose tokenizer has no byte fallback: it cannot spell 'ж'."""
    import sentencepiece as spm
    from llama_factory import CORPUS, make_hf_llama

    tmp = tmp_path_factory.mktemp("no_bytes")
    d, model_file = tmp / "m", tmp / "t.model"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS[:8] * 4), model_prefix=str(tmp / "t"),
                                   vocab_size=80, model_type="bpe", byte_fallback=False, hard_vocab_limit=False,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    size = spm.SentencePieceProcessor(model_file=str(model_file)).GetPieceSize()
    make_hf_llama(d, vocab=size, seed=1)
    (d / "tokenizer.model").write_bytes(model_file.read_bytes())
    return d


def test_a_dead_row_ends_with_finish_constraint_and_a_warning(no_bytes):
    """After 'a' the row has no token: the tokenizer cannot spell 'ж'."""
    m = decode.load(str(no_bytes))
    with pytest.warns(constraint.ConstraintWarning, match="finish \"constraint\""):
        out = decode.generate(m, 'regex "(a|e)жж" | max 6', ["To be"], compile=False)
    s = out[0].sequences[0]
    assert s.finish == "constraint" and EOS not in s.ids and len(s.ids) == 1
    with pytest.raises(ValueError, match="no token of this model's tokenizer can start"):
        decode.generate(m, 'regex "жж" | max 6', ["To be"], compile=False)


def test_check_with_a_model_names_a_constraint_its_tokenizer_cannot_start(no_bytes, capsys):
    from decode.cli import main

    assert main(["check", 'regex "(a|e)ж"', 'max 4 | regex "жж"', "--model", str(no_bytes)]) == 1
    err = capsys.readouterr().err
    assert "regex \"жж\"': no token of this model's tokenizer can start" in err and "^^^" in err
    assert err.count("no token") == 1  # 'a' starts the first: its dead end is the run's to report
    assert main(["check", 'regex "жж"', "--model", str(DEMO)]) == 0  # byte pieces spell anything


def test_a_recipe_file_reads_its_schema_beside_it_and_fingerprints_the_contents(ours, tmp_path, monkeypatch):
    from decode.cli import main
    from decode.dsl import read_recipe
    from decode.dsl.check import folder_of

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "s.json").write_text('{"type": "integer", "minimum": 1, "maximum": 9}')
    (tmp_path / "r" / "x.dec").write_text('# a digit\njson schema="s.json" | max 4\n')
    monkeypatch.chdir(tmp_path)  # the working directory has no s.json
    with pytest.raises(decode.RecipeError, match="no such JSON schema file 's.json' .*the working directory"):
        decode.parse('json schema="s.json"')
    first = decode.parse(read_recipe("r/x.dec"), folder_of("r/x.dec"))
    assert main(["check", "r/x.dec"]) == 0 and main(["fmt", "r/x.dec"]) == 0 and main(["explain", "r/x.dec"]) == 0
    got = decode.generate(ours, first, PROMPTS[:1], compile=False)[0]
    assert got.fingerprint == first.fingerprint and re.fullmatch("[1-9]", bytes_of(ours, got.sequences[0].ids))
    (tmp_path / "r" / "s.json").write_text('{"type": "integer", "minimum": 10, "maximum": 99}')
    edited = decode.parse(read_recipe("r/x.dec"), folder_of("r/x.dec"))
    assert edited.canonical == first.canonical and edited.fingerprint != first.fingerprint
    assert decode.parse("beam 4 | max 8").fingerprint == decode.parse("beam 4 | max 8", "r").fingerprint


# -- the property: 200 (recipe, seed, prompt) combinations across the searches (slow) -------------
SEARCHES = ["greedy", "sample 2", "beam 3", "beam 4 | diverse groups=2 penalty=1", "sbeam 3",
            "beam 3 | topp 0.9", "contrastive k=3 alpha=0.5", "beam 4 | siblings 1",
            "beam 4 | diverse groups=2 penalty=1 kind=cumulative", "sample 2 | temp 0.8", "dola layers=high"]
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "recipes" / "schemas" / "character.json"
CONSTRAINTS = [("regex", '"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"'),
               ("choice", '" Romeo" " Juliet" " the Nurse"'), ("json", f'schema="{SCHEMA_FILE}"'),
               ("grammar", '"start: sum\\nsum: NUM | sum OP NUM\\nOP: /[-+*]/\\nNUM: /[0-9]{1,3}/"')]
LINES = ["ROMEO:", "JULIET:\nO Romeo", "To be, or not", "HAMLET:", "What light", "NURSE:\nMadam"]


def combination(i: int):
    name, arg = CONSTRAINTS[i % 4]
    search = SEARCHES[(i // 4) % len(SEARCHES)]
    return f"{name} {arg} | {search} | seed {i} | max {8 + i % 17}", name, LINES[i % len(LINES)]


def accepts(name: str, text: str, complete: bool) -> bool:
    regex = pytest.importorskip("regex")
    if name == "json":
        if not complete:
            return True  # a cut text is a prefix the matcher took, token by token; checked in full below
        jsonschema = pytest.importorskip("jsonschema")
        jsonschema.validate(json.loads(text), json.loads(SCHEMA_FILE.read_text()))
        return True
    pattern = {"regex": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
               "choice": r" Romeo| Juliet| the Nurse", "grammar": r"[0-9]{1,3}([-+*][0-9]{1,3})*"}[name]
    return bool(regex.fullmatch(pattern, text) if complete else regex.fullmatch(pattern, text, partial=True))


@pytest.mark.slow
@pytest.mark.parametrize("i", range(200))
def test_every_returned_sequence_is_accepted_or_a_prefix_cut_by_max(ours, i):
    recipe, name, prompt = combination(i)
    for c in decode.generate(ours, recipe, [prompt], compile=False):
        for s in c.sequences:
            text = bytes_of(ours, s.ids)
            assert s.finish in ("eos", "max"), (recipe, s)
            assert accepts(name, text, s.finish == "eos"), (recipe, text)
            if s.finish == "max":  # a prefix the constraint still accepts: the matcher takes it
                m = matcher(ours, recipe)
                replay(m, s.ids)
                assert not m.dead, (recipe, text)
