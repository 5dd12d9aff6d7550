"""A damaged torch compile cache costs one recompile, never a crash on every later run."""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from decode.compiler.kernel_cache import CompileCacheWarning, first_call, scan


def _elf(path, cut=None):
    """A real shared object (python's own extension modules are ELF files)."""
    import _struct

    data = open(_struct.__file__, "rb").read() if _struct.__file__.endswith(".so") else None
    if data is None:
        pytest.skip("no ELF extension module to copy on this platform")
    path.write_bytes(data if cut is None else data[:cut])
    return path


def test_scan_finds_empty_and_truncated_kernels_and_spares_whole_ones(tmp_path):
    (tmp_path / "ab").mkdir()
    whole = _elf(tmp_path / "ab" / "cwhole.so")
    cut = _elf(tmp_path / "ab" / "ccut.so", cut=1000)
    empty_so = tmp_path / "ab" / "cempty.so"
    empty_so.write_bytes(b"")
    empty_py = tmp_path / "ab" / "cempty.py"
    empty_py.write_text("")
    ok_py = tmp_path / "ab" / "cok.py"
    ok_py.write_text("x = 1\n")
    assert sorted(scan(str(tmp_path))) == sorted(map(str, [cut, empty_so, empty_py]))
    assert os.path.getsize(whole) > 1000


def _failing(paths, calls):
    def fn(x):
        calls.append("compiled")
        from torch._dynamo.exc import BackendCompilerFailed

        inner = ImportError(f"{paths[0]}: file too short")
        raise BackendCompilerFailed(lambda: None, inner, None) from inner
    return fn


def test_first_call_removes_the_named_file_and_recompiles(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    bad = tmp_path / "xy" / "cbad.py"
    bad.parent.mkdir()
    bad.write_text("def call(:\n")            # not empty: only the error names it
    calls = []
    step = first_call(_failing([str(bad)], calls), lambda x: "eager",
                      lambda: (lambda x: calls.append("recompiled") or x + 1))
    with pytest.warns(CompileCacheWarning, match="compiling again"):
        assert step(1) == 2
    assert not bad.exists()
    assert calls == ["compiled", "recompiled"]
    assert step(2) == 3                        # later calls go straight to the new function


def test_first_call_falls_back_to_eager_when_the_repair_does_not_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    bad = tmp_path / "cbad.so"
    calls = []

    def recompile():
        bad.write_bytes(b"")                   # damaged again
        return _failing([str(bad)], calls)

    bad.write_bytes(b"")
    step = first_call(_failing([str(bad)], calls), lambda x: f"eager {x}", recompile)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert step(5) == "eager 5"
    assert "uncompiled" in str(seen[-1].message) and str(tmp_path) in str(seen[-1].message)


def test_first_call_lets_errors_outside_the_cache_through(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    def broken(x):
        raise ValueError("a bug in the step, not the cache")

    step = first_call(broken, lambda x: "eager", lambda: broken)
    with pytest.raises(ValueError, match="a bug in the step"):
        step(1)


SCRIPT = textwrap.dedent("""
    import sys, warnings
    sys.path.insert(0, {tests!r})
    import decode
    warnings.simplefilter("always")
    m = decode.load({model!r})
    out = decode.generate(m, "greedy | max 3", [[1, 2, 3]])
    print("IDS", out[0].sequences[0].ids)
""")


def test_a_compile_cache_with_truncated_kernels_recompiles_instead_of_crashing(tmp_path):
    """The issue's reproduction: kill-like damage (0-byte and cut .so files) between runs."""
    from llama_factory import make_hf_llama

    model = make_hf_llama(tmp_path / "m", vocab=64, dim=16, layers=1, heads=2, kv_heads=1, ff=32)
    cache = tmp_path / "inductor"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    script = SCRIPT.format(tests=os.path.dirname(__file__), model=str(model))

    def run():
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=600)

    first = run()
    assert first.returncode == 0, first.stderr[-2000:]
    kernels = sorted(p for p in cache.rglob("*.so"))
    assert len(kernels) >= 2
    kernels[0].write_bytes(b"")
    with open(kernels[1], "r+b") as f:
        f.truncate(1000)
    second = run()
    assert second.returncode == 0, second.stderr[-2000:]
    assert "CompileCacheWarning" in second.stderr and str(cache) in second.stderr
    assert second.stdout.split("IDS")[-1] == first.stdout.split("IDS")[-1]


def test_watchers_see_the_first_call_start_and_end_once_even_through_a_repair(tmp_path, monkeypatch):
    from decode.compiler.kernel_cache import watch_compiles

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    bad = tmp_path / "xy" / "cbad.py"
    bad.parent.mkdir()
    bad.write_text("def call(:\n")
    seen = []
    step = first_call(_failing([str(bad)], []), lambda x: "eager", lambda: (lambda x: seen.append("run") or x),
                      what="the thing")
    with watch_compiles(lambda starting, what: seen.append((starting, what))), pytest.warns(CompileCacheWarning):
        assert step(1) == 1
        assert step(2) == 2           # compiled already: nothing to watch
    assert seen == [(True, "the thing"), "run", (False, "the thing"), "run"]
    broken = first_call(lambda x: 1 / 0, lambda x: x, lambda: None)
    with watch_compiles(lambda starting, what: seen.append(starting)), pytest.raises(ZeroDivisionError):
        broken(1)
    assert seen[-2:] == [True, False]  # a failing compile still ends the status


def test_run_shows_a_compile_status_on_stderr_only_while_compiling(monkeypatch, capsys):
    import decode.cli as cli

    events = []
    monkeypatch.setattr("rich.progress.Progress.start", lambda self: events.append(
        ("start", " ".join(str(c.text_format) for c in self.columns if hasattr(c, "text_format")))))
    monkeypatch.setattr("rich.progress.Progress.stop", lambda self: events.append("stop"))
    with cli._compile_status():
        from decode.compiler.kernel_cache import _watchers
        for watch in list(_watchers):
            watch(True, "the model's forward (once per model and shape)")
            watch(False, "the model's forward (once per model and shape)")
    assert events == [("start", "compiling the model's forward (once per model and shape)"), "stop"]
    from decode.compiler.kernel_cache import _watchers
    assert not _watchers
