"""Compiled steps are kept per model, bounded, and never keep a dropped model alive."""
import gc
import weakref

import torch

import decode
from decode.compiler import step_cache


def _models(tmp_path, n):
    from llama_factory import make_hf_llama

    return [decode.load(str(make_hf_llama(tmp_path / f"m{i}", vocab=64, dim=16, layers=1, heads=2,
                                          kv_heads=1, ff=32, seed=i))) for i in range(n)]


def test_five_models_decoded_and_dropped_are_freed_with_their_steps(tmp_path):
    models = _models(tmp_path, 5)
    refs = [weakref.ref(m) for m in models]
    params = [weakref.ref(next(m.parameters())) for m in models]
    for i, m in enumerate(models):
        # two compiled (the graphs dynamo keeps must not hold a model either), three eager
        out = decode.generate(m, "beam 2 | max 3", [[1, 2, 3]], compile=i < 2)
        assert out[0].sequences
    assert step_cache.size() >= 5
    del models, m, out
    gc.collect()
    assert [r() for r in refs] == [None] * 5
    assert [p() for p in params] == [None] * 5
    assert step_cache.size() == 0


def test_a_model_keeps_at_most_max_steps_dropping_the_least_recently_used(tmp_path, monkeypatch):
    monkeypatch.setattr(step_cache, "MAX_STEPS", 2)
    (m,) = _models(tmp_path, 1)
    built = []

    def build(name):
        built.append(name)
        return lambda *a: name

    a = step_cache.get(m, "a", build)
    step_cache.get(m, "b", build)
    assert step_cache.get(m, "a", build) is a       # reused, and now the most recent
    step_cache.get(m, "c", build)                   # evicts "b", the least recently used
    assert step_cache.get(m, "a", build) is a and len(built) == 3
    step_cache.get(m, "b", build)                   # built again; evicts "c"
    step_cache.get(m, "a", build)
    assert len(built) == 4
    step_cache.get(m, "c", build)
    assert len(built) == 5


def test_importing_the_engine_changes_no_torch_setting():
    import subprocess
    import sys

    code = ("import torch; before = (torch._dynamo.config.cache_size_limit, "
            "torch._dynamo.config.accumulated_cache_size_limit); "
            "import decode.compiler.engine; "
            "assert before == (torch._dynamo.config.cache_size_limit, "
            "torch._dynamo.config.accumulated_cache_size_limit), 'changed'")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert torch  # the test process imported it too
