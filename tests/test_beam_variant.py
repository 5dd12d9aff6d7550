"""A beam variant is one small file using the public plugin API (recipes/plugins/wordreward.py:
a `decode.Beam` subclass that overrides `rescore`), and it is traced and drawn by `decode viz`
with no code of its own.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import decode
from decode.cli import main
from table_model import TableModel

ROOT = Path(__file__).resolve().parents[1]
WORDREWARD = ROOT / "recipes" / "plugins" / "wordreward.py"

pytestmark = pytest.mark.usefixtures("restore_catalogue")  # plugins register clauses


@pytest.fixture(scope="module")
def table():
    return TableModel.random(5, scale=2.0)


def logprob(model, prompt, ids) -> float:
    """log P(ids | prompt) under the bigram table, token by token."""
    seq, total = list(prompt), 0.0
    for tok in ids:
        total += torch.log_softmax(model.table[seq[-1]].double(), -1)[tok].item()
        seq.append(tok)
    return total


def test_the_example_is_one_file_of_at_most_30_lines_using_only_the_public_api():
    text = WORDREWARD.read_text()
    assert len(text.splitlines()) <= 30
    assert [line for line in text.splitlines() if line.startswith(("import", "from"))] == ["import decode"]
    assert decode.load_stages(WORDREWARD) == ["wordreward"]


def test_no_reward_is_plain_beam_search(table):
    decode.load_stages(WORDREWARD)
    prompts = [[0, 3], [1], [5, 2]]
    ours = decode.generate(table, "wordreward 3 r=0 lenpen=0.7 | max 6", prompts, compile=False)
    beam = decode.generate(table, "beam 3 lenpen=0.7 | max 6", prompts, compile=False)
    assert [[(s.ids, s.score) for s in c.sequences] for c in ours] == \
           [[(s.ids, s.score) for s in c.sequences] for c in beam]


@pytest.mark.parametrize("r", [0.5, 2.0])
def test_each_token_adds_the_reward_to_the_final_score(table, r):
    decode.load_stages(WORDREWARD)
    prompt = [0, 3]
    out = decode.generate(table, f"wordreward 3 r={r} lenpen=0.7 | max 6", [prompt], compile=False)[0]
    for s in out.sequences:
        n = len(s.ids)
        assert s.score == pytest.approx((logprob(table, prompt, s.ids) + r * n) / n ** 0.7, abs=1e-4)
    plain = decode.generate(table, "beam 3 lenpen=0.7 | max 6", [prompt], compile=False)[0]
    assert [s.ids for s in out.sequences] != [s.ids for s in plain.sequences] or r < 1  # it changes the search
    mean = sum(len(s.ids) for s in out.sequences) / len(out.sequences)
    assert mean >= sum(len(s.ids) for s in plain.sequences) / len(plain.sequences)


def test_the_variant_is_traced_and_drawn_by_viz(tmp_path, capsys):
    trace, page = tmp_path / "t.jsonl", tmp_path / "tree.html"
    code = main(["run", "--stage", str(WORDREWARD), "wordreward 3 r=0.8 | max 6", "--prompt", "ROMEO:",
                 "--json", "--no-compile", "--trace", str(trace)])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    cands = [c for c in lines if c["type"] == "cand"]
    assert lines[0]["rows"] == 3 and any(not c["kept"] for c in cands)  # the pruned ones too
    assert all(math.isfinite(c["logp"]) for c in cands)
    nodes = {c["node"]: c for c in cands if c["kept"]}
    for seq in lines[-1]["results"][0]["sequences"]:
        path, ref = [], seq["node"]
        while ref is not None:
            path.append(nodes[ref]["token"])
            ref = nodes[ref]["parent_node"]
        assert path[::-1] == seq["ids"]
    assert [s["ids"] for s in lines[-1]["results"][0]["sequences"]] == [s["ids"] for s in result["sequences"]]
    assert main(["viz", str(trace), "--html", str(page)]) == 0
    assert page.read_text().count("data-node=") == len(nodes)
    assert main(["viz", str(trace)]) == 0
    assert result["sequences"][0]["text"].strip()[:5] in capsys.readouterr().out
