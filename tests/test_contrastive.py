"""Contrastive search (`contrastive k=K alpha=A`) against transformers 4.55.4's
generate(penalty_alpha=A, top_k=K): token-exact ids on random llama checkpoints (MHA and
GQA, tied and untied), three prompts of different lengths in one batch, EOS boosted so rows
end mid-way. The normal suite runs two checkpoints; `-m slow` all four.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from decode.cli import main  # noqa: E402
from decode.compiler import step_cache  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402

EOS, PAD = 2, 0
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [1, 40, 41, 42, 43, 44, 45, 46]]
MAX_NEW = 12
SETTINGS = [(4, 0.6), (4, 0.0), (3, 1.0)]  # (k, alpha): the paper's, greedy, penalty only
# (heads, kv heads, tied embeddings, seed)
CHECKPOINTS = {"mha-untied": (4, 4, False, 3), "gqa-tied": (4, 2, True, 5),
               "mha-tied": (4, 4, True, 7), "gqa-untied": (4, 1, False, 11)}
FAST = ("mha-untied", "gqa-tied")


def _build(path, heads, kv, tie, seed):
    make_hf_llama(path, vocab=61, dim=32, layers=2, heads=heads, kv_heads=kv, ff=64, tie=tie, seed=seed)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # make EOS likely enough to end some rows early
        hf.lm_head.weight[EOS] += 0.6 * hf.lm_head.weight.mean(0) + 0.15
    hf.save_pretrained(path, safe_serialization=True)
    return hf, decode.load(str(path))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    built = {}

    def get(name):
        if name not in built:
            built[name] = _build(tmp_path_factory.mktemp(name) / "m", *CHECKPOINTS[name])
        return built[name]

    return get


def reference(hf, prompts, k, alpha, **kw):
    """transformers' contrastive search: each row's new ids, up to and with its first EOS."""
    p_len = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts])
    # trust_remote_code=True only silences the "moving to the hub" warning: without
    # custom_generate, generate() loads nothing and runs its own _contrastive_search
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                      penalty_alpha=alpha, top_k=k, eos_token_id=EOS, pad_token_id=EOS, top_p=None,
                      temperature=None, trust_remote_code=True, **kw)
    rows = [r[p_len:].tolist() for r in out]
    return [r[: r.index(EOS) + 1] if EOS in r else r for r in rows]


def ours(model, recipe, prompts, compile=False):  # noqa: A002
    return [c.sequences[0].ids for c in decode.generate(model, recipe, prompts, compile=compile)]


def grid(names):
    return [pytest.param(n, k, a, marks=[] if n in FAST else [pytest.mark.slow])
            for n in names for k, a in SETTINGS]


@pytest.mark.parametrize("name,k,alpha", grid(CHECKPOINTS))
def test_contrastive_matches_transformers(checkpoints, name, k, alpha):
    hf, model = checkpoints(name)
    want = reference(hf, PROMPTS, k, alpha)
    assert ours(model, f"contrastive k={k} alpha={alpha} | max {MAX_NEW}", PROMPTS) == want
    if alpha == 0.0:  # alpha 0 is greedy search, whatever k
        assert ours(model, f"greedy | max {MAX_NEW}", PROMPTS) == want


def test_rows_end_mid_way_and_alpha_changes_the_text(checkpoints):
    """The grid above tests what it should: some rows end with EOS before `max`, and the
    penalty changes what greedy would choose."""
    _, model = checkpoints("mha-untied")
    got = {a: ours(model, f"contrastive k=4 alpha={a} | max {MAX_NEW}", PROMPTS) for a in (0.0, 0.6)}
    assert any(r[-1] == EOS and len(r) < MAX_NEW for r in got[0.6])
    assert got[0.0] != got[0.6]


@pytest.mark.parametrize("stage,kw", [("repetition 1.2", {"repetition_penalty": 1.2}),
                                      ("norepeat 1", {"no_repeat_ngram_size": 1})])
def test_logit_stages_compose_as_transformers_processors(checkpoints, stage, kw):
    """transformers runs its logits processors before the top-k (prompts of one length: it
    also penalises the padding it reads as tokens)."""
    hf, model = checkpoints("gqa-tied")
    prompts = [[1, 5, 9, 13, 7], [1, 22, 3, 22, 8]]
    want = reference(hf, prompts, 4, 0.6, **kw)
    assert want != reference(hf, prompts, 4, 0.6)
    assert ours(model, f"contrastive k=4 alpha=0.6 | {stage} | max {MAX_NEW}", prompts) == want


def test_compiled_equals_eager_and_alpha_reuses_the_compiled_step(checkpoints):
    from torch._dynamo.utils import counters

    hf, model = checkpoints("gqa-tied")
    for i, alpha in enumerate((0.6, 0.3)):
        recipe = f"contrastive k=4 alpha={alpha} | max {MAX_NEW}"
        compiled = decode.generate(model, recipe, PROMPTS)
        eager = decode.generate(model, recipe, PROMPTS, compile=False)
        assert [c.sequences[0].ids for c in compiled] == reference(hf, PROMPTS, 4, alpha)
        for a, b in zip(compiled, eager):
            assert a.sequences[0].ids == b.sequences[0].ids
            assert a.sequences[0].score == pytest.approx(b.sequences[0].score, abs=1e-4)
        if i == 0:
            graphs, steps = counters["stats"]["unique_graphs"], step_cache.size()
    assert (counters["stats"]["unique_graphs"], step_cache.size()) == (graphs, steps)


@pytest.mark.parametrize("recipe,message,caret", [
    ("contrastive | topp 0.9", "drop 'topp 0.9' (it makes the recipe sample)", "^^^^^^^^^^^"),
    ("contrastive k=4 | temp 0.7", "drop 'temp 0.7'", "^^^^^^^^^^^^^^^"),
    ("beam 4 | contrastive", "two search clauses", "^^^^^^^^^^^"),
    ("contrastive | diverse groups=2", "'diverse' needs a 'beam K' search, found contrastive", "^"),
    ("contrastive k=0", "1 <= k", "^"),
    ("contrastive alpha=1.5", "0 <= alpha <= 1", "^^^"),
])
def test_bad_recipes_are_one_message_with_a_caret(capsys, recipe, message, caret):
    assert main(["check", recipe]) == 1
    err = capsys.readouterr().err
    assert message in err and caret in err and "Traceback" not in err


def test_more_candidates_than_tokens_is_one_message(checkpoints, capsys, tmp_path):
    _, model = checkpoints("mha-untied")
    code = main(["run", "contrastive k=62 | max 2", "--prompt-ids", "1,2,3", "--model", model.source,
                 "--no-compile"])
    err = capsys.readouterr().err
    assert code == 1 and "contrastive k=62 asks for more candidates than this model has tokens (61)" in err
    assert "Traceback" not in err


def test_explain_says_it_in_words_and_gives_the_transformers_call(capsys):
    assert main(["explain", "contrastive k=3 alpha=0.7"]) == 0
    out = capsys.readouterr().out
    assert "each step the 3 most likely tokens" in out and "0.3·p - 0.7·" in out
    assert main(["explain", "contrastive k=3 alpha=0.7 | repetition 1.2", "--hf"]) == 0
    out = capsys.readouterr().out
    for kwarg in ("penalty_alpha=0.7", "top_k=3", "repetition_penalty=1.2", "do_sample=False"):
        assert kwarg in out


def test_the_prompts_padding_is_not_context():
    """A padding slot whose hidden state is the top candidate's own must not penalise it (the
    reference's cosine_matrix_mask); random checkpoints rarely show this, so it is built here."""
    from decode.compiler.search.base import At, SearchConfig
    from decode.compiler.search.contrastive import Contrastive

    search = Contrastive(SearchConfig(batch=1, params={"k": 2, "alpha": 0.5}, vocab=4))
    basis = torch.eye(3)  # candidate token j's hidden state is basis[j]; slot 1 holds basis[2]
    state = search.prompted(search.begin(torch.device("cpu"), 4), basis[[0, 2]][None], 4)
    taken = []
    at = At(t=torch.tensor(0), process=lambda x, rows: x, noise=None, seq=torch.zeros(1, 4, dtype=torch.long),
            prompt=torch.tensor(2), max_new=torch.tensor(2),
            hp={k: torch.tensor(v) for k, v in search.hyper().items()}, score=torch.zeros(1),
            pad=torch.tensor([1]), ahead=lambda cand: (None, basis[cand]), take=taken.append)
    choice = search.step(torch.tensor([[3.0, 2.0, 0.0, -1.0]]), at, state["own"])
    assert choice.tokens.tolist() == [0] and taken[0].tolist() == [0]
    at.pad = torch.tensor([0])  # the same slot as context: token 0 is now a repetition
    assert search.step(torch.tensor([[3.0, 2.0, 0.0, -1.0]]), at, state["own"]).tokens.tolist() == [1]


def test_candidates_past_memory_are_refused_before_allocating(tmp_path, capsys, monkeypatch):
    """k candidates per row cost k rows of logits a step: counted before anything is built."""
    from decode.runtime import Llama, memory

    path = make_hf_llama(tmp_path / "wide", vocab=30000, dim=8, layers=1, heads=1, kv_heads=1, ff=8)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * 10**9)
    monkeypatch.setattr(Llama, "new_cache", lambda *a, **k: pytest.fail("allocated before checking"))
    code = main(["run", "contrastive k=30000 | max 2", "--model", str(path), "--prompt-ids", "1,5,7",
                 "--no-compile"])
    err = capsys.readouterr().err
    assert code == 1 and "Decoding needs" in err and "the candidates a row looks ahead at (now 30000)" in err
    assert "Traceback" not in err
