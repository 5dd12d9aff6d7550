"""What draft and lookup record: a trace and per-token log-probs equal to plain greedy's
(taken from the verify forward), each round's accepted drafts in --json, the trace and
viz, the draft model's hash in the provenance (replay tells another draft apart), and
`decode bench` beside plain decoding. Eager runs: no compiling here."""
import io
import json

import pytest

import decode
from decode.cli import main
from decode.compiler.engine import run
from decode.compiler.plan import compile as lower
from decode.compiler.provenance import problem
from decode.runtime import identity
from decode.traces.record import TraceRecorder

pytest.importorskip("transformers")
from llama_factory import make_hf_llama  # noqa: E402

PROMPTS = [[5, 9, 11, 5, 9, 11, 5, 9, 11, 5], [7, 3], [1, 20, 21, 22, 23, 20, 21]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return (make_hf_llama(d / "t", vocab=61, dim=32, layers=2, seed=1),
            make_hf_llama(d / "d", vocab=61, dim=16, layers=1, heads=2, kv_heads=1, ff=32, seed=9))


def traced(m, recipe):
    """(completions with 3 log-probs each, the trace's lines) of an eager run."""
    buf, plan = io.StringIO(), lower(recipe)
    rec = TraceRecorder(buf, plan, m, PROMPTS)
    outs = run(plan, m, PROMPTS, compiled=False, on_step=rec, trace=True, logprobs=3)
    rec.finish(outs)
    return outs, [json.loads(x) for x in buf.getvalue().splitlines()]


def test_trace_and_logprobs_of_draft_and_lookup_are_plain_greedys(pair):
    target, draft = pair
    m = decode.load(str(target))
    want, plain = traced(m, "greedy | max 24")
    for r in ("greedy | lookup n=2 k=4 | max 24", f'greedy | draft "{draft}" k=3 | max 24'):
        got, lines = traced(m, r)
        for g, w in zip(got, want):
            g, w = g.sequences[0], w.sequences[0]
            assert g.ids == w.ids and len(g.logprobs) == len(g.ids)
            for a, b in zip(g.logprobs, w.logprobs):
                assert a.id == b.id and abs(a.raw - b.raw) < 1e-4 and abs(a.processed - b.processed) < 1e-4
                assert [x.id for x in a.top_raw] == [x.id for x in b.top_raw]
                assert [x.id for x in a.top_processed] == [x.id for x in b.top_processed]
        assert got[0].logprobs == want[0].logprobs  # what they mean, for the JSON
        cands = [(x, y) for x, y in zip(lines, plain) if x["type"] == "cand"]
        assert len(lines) == len(plain) and len(cands) > 24
        for x, y in cands:  # the same tree, node for node; log-probs from the verify forward
            assert {k: v for k, v in x.items() if k != "logp"} == {k: v for k, v in y.items() if k != "logp"}
            assert abs(x["logp"] - y["logp"]) < 1e-4
        final = lines[-1]["results"]
        assert [s["speculative"] for f in final for s in f["sequences"]] == \
               [s.speculative for c in got for s in c.sequences]


def test_on_step_sees_every_token_in_order_once_each_row_has_it(pair):
    target, draft = pair
    m = decode.load(str(target))
    seen = []
    outs = decode.generate(m, f'greedy | draft "{draft}" k=3 | max 24', PROMPTS, compile=False,
                           on_step=lambda t, tokens, info: seen.append((t, tokens.tolist())))
    assert [t for t, _ in seen] == list(range(len(seen)))
    for r, c in enumerate(outs):
        ids = c.sequences[0].ids
        assert [tok[r] for _, tok in seen][:len(ids)] == ids


def test_json_trace_and_viz_record_the_drafts_each_round_accepted(capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    argv = ["run", "greedy | lookup n=1 k=4 | max 16", "--prompt", "ROMEO:\nROMEO:\nROMEO:", "--json",
            "--no-compile", "--logprobs", "2", "--trace", str(trace)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    s = out["sequences"][0]
    spec = s["speculative"]
    assert len(spec["proposed"]) == len(spec["accepted"]) >= 1 and sum(spec["proposed"]) > 0
    assert all(0 <= a <= p for a, p in zip(spec["accepted"], spec["proposed"]))
    assert len(spec["accepted"]) + sum(spec["accepted"]) >= len(s["ids"])  # a round: its drafts + one
    assert len(s["logprobs"]) == len(s["ids"]) and out["logprobs"]["top"] == 2
    final = json.loads(trace.read_text().splitlines()[-1])
    assert final["results"][0]["sequences"][0]["speculative"] == spec
    assert main(["viz", str(trace)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"{sum(spec['accepted'])}/{sum(spec['proposed'])} drafts accepted in {len(spec['proposed'])} rounds" in shown


def test_the_provenance_names_the_draft_and_replay_tells_another_draft_apart(pair, tmp_path, capsys):
    target, _ = pair
    draft = make_hf_llama(tmp_path / "d", vocab=61, dim=16, layers=1, heads=2, kv_heads=1, ff=32, seed=9)
    m = decode.load(str(target))
    c = decode.generate(m, f'greedy | draft "{draft}" k=2 | max 8', PROMPTS[:1], compile=False)[0]
    assert c.provenance["draft_hash"] == identity.model_hash(decode.load(str(draft)))
    assert problem(c.provenance) is None and problem({**c.provenance, "draft_hash": 3}) is not None
    assert "draft_hash" not in decode.generate(m, "greedy | max 2", PROMPTS[:1], compile=False)[0].provenance
    line = {**c.to_json(), "provenance": {**c.provenance, "model": str(target)}}
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(line) + "\n")
    assert main(["replay", str(results), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "identical"
    make_hf_llama(draft, vocab=61, dim=16, layers=1, heads=2, kv_heads=1, ff=32, seed=10)  # other weights
    m.__dict__.pop("_decode_drafts", None)  # as a new process would: the draft is read again
    code = main(["replay", str(results), "--json"])
    got = json.loads(capsys.readouterr().out)
    assert code == 3 and got["verdict"] == "not reproducible here" and "another draft model" in got["why"]


def test_bench_times_a_speculative_recipe_beside_plain_decoding(capsys, monkeypatch):
    from decode.perf import bench

    eager = bench.run
    monkeypatch.setattr(bench, "run", lambda *a, **kw: eager(*a, compiled=False, **kw))
    argv = ["bench", "greedy | draft k=2", "--shape", "demo", "--new", "6", "--repeats", "1", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows, meta = {r["name"]: r for r in out["rows"]}, out["meta"]
    assert "without drafts: greedy" in rows and rows["decode"]["tok_s"] > 0
    assert out["ratios"]["without drafts/ours"] == pytest.approx(rows["without drafts: greedy"]["ms"] / rows["decode"]["ms"])
    assert meta["steps"] == 6 and 1 <= meta["rounds"] <= 6
    assert meta["proposed"] > 0 and meta["acceptance"] == meta["accepted"] / meta["proposed"] and 0 <= meta["accepted"] <= meta["proposed"]


def test_bench_of_a_draft_recipe_on_a_random_shape_says_to_use_the_demo_shape(capsys):
    assert main(["bench", "greedy | draft k=2", "--new", "2", "--repeats", "1"]) == 1
    err = capsys.readouterr().err
    assert "4096 tokens" in err and "give --shape demo" in err and "Traceback" not in err


def test_a_stop_string_ends_a_speculative_row_where_it_ends_plain_greedys():
    """The score is the kept tokens' (a round that ran past the stop string counted the tokens
    after it, which the text then cut), and the row stops there."""
    m = decode.load()
    prompts = ["ROMEO:", "JULIET: O"]
    want = decode.generate(m, 'greedy | stop "\\n" "," | max 12', prompts, compile=False, logprobs=1)
    assert {c.sequences[0].finish for c in want} == {"stop"}
    for r in ("lookup n=1 k=4", "draft k=3"):
        got = decode.generate(m, f'greedy | {r} | stop "\\n" "," | max 12', prompts, compile=False, logprobs=1)
        for g, w in zip(got, want):
            g, w = g.sequences[0], w.sequences[0]
            assert (g.ids, g.finish) == (w.ids, w.finish), r
            assert abs(g.score - w.score) < 1e-4, r
            assert abs(g.score - sum(t.processed for t in g.logprobs)) < 1e-4, r


def test_the_stop_check_reads_each_round_only_the_tokens_the_round_added():
    import torch

    from decode.compiler.speculative_run import _stopped

    class Stops:  # a stop "string": token 9 anywhere in the new ids
        def __init__(self):
            self.seen = []

        def hit(self, ids):
            self.seen.append(list(ids))
            return 9 in ids

    p_len, stops, kept = 2, Stops(), [[], []]
    seq = torch.tensor([[1, 1, 5, 6, 0, 0, 0], [1, 1, 7, 0, 0, 0, 0]])
    assert _stopped(stops, seq, torch.tensor([2, 1]), p_len, kept) == [False, False]
    assert kept == [[5, 6], [7]]
    seq[:, p_len:p_len + 2] = 9  # slots read before are not read again: their ids are kept
    seq[0, 4], seq[1, 3:5] = 8, torch.tensor([9, 4])
    assert _stopped(stops, seq, torch.tensor([3, 3]), p_len, kept) == [False, True]
    assert kept == [[5, 6, 8], [7, 9, 4]] and stops.seen[-2:] == kept
