"""`decode bench` and the benchmark script: they run and report what they claim (no timing
asserted: timings are for benchmarks, not tests)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from decode.cli import main


def test_bench_json_reports_ours_the_floor_and_the_roofline(capsys):
    assert main(["bench", "greedy", "--shape", "demo", "--new", "4", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in out["rows"]]
    assert names[0] == "decode" and any(n.startswith("matmul floor") for n in names)
    assert "bandwidth roofline" in names
    assert out["meta"]["recipe"] == "greedy" and out["meta"]["steps"] == 4
    assert out["rows"][0]["ms"] > 0 and out["rows"][0]["compile_s"] >= 0
    assert out["ratios"]["ours/floor"] > 0


def test_standard_script_interleaves_recipes_and_writes_the_table(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import standard

    from decode.runtime import loaders

    monkeypatch.setattr(standard, "random_model", lambda shape, dtype=None: loaders.load(None, dtype=dtype))
    # where llama-cpp-python is missing the table says so (benchmarks/llamacpp.py runs it where it is not)
    monkeypatch.setattr(standard, "available", lambda: "llama-cpp-python not installed (pip install ...)")
    out = tmp_path / "t.md"
    assert standard.main(["--recipes", "greedy,beam 2", "--new", "3", "--repeats", "2", "--no-hf",
                          "--out", str(out)]) == 0
    text = out.read_text()
    assert "| greedy | 1 | fp32 | 1 |" in text and "| beam 2 | 1 | fp32 | 2 |" in text
    assert text.count("round") == 0 and "best of 2 runs interleaved" in text
    assert "llama.cpp column: llama-cpp-python not installed" in text
    assert "| llama.cpp ms/step |" in text and "| llama.cpp/ours |" in text
    assert "round 2/2: greedy fp32" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform == "win32", reason="posix only")
def test_gpu_script_says_it_needs_a_gpu(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu

    if gpu.torch.cuda.is_available():
        pytest.skip("a GPU is here: run benchmarks/gpu.py itself")
    assert gpu.main([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
