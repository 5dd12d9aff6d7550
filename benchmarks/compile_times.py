"""Compile time of the standard recipes: cold (a fresh process and an empty inductor cache)
and warm (a fresh process, the cache the cold run left), one recipe at a time.

    python benchmarks/compile_times.py --out benchmarks/results-compile.md

torch.compile keeps compiled kernels and graphs on disk (TORCHINDUCTOR_CACHE_DIR, by
default under the system temp directory), so only a machine's first run of a recipe
structure pays the cold figure; kernels one recipe shares with another (the model's
forward) are compiled once for both.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from standard import STANDARD, emit


def one(recipe: str, cache: str, shape: str) -> float:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-m", "decode", "bench", recipe, "--shape", shape, "--new", "8",
                          "--repeats", "1", "--threads", "1", "--json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["rows"][0]["compile_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--recipes", default=",".join(STANDARD))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = [f"shape {args.shape}, 1 torch thread, {os.cpu_count()} CPUs for the compiler, "
             f"{time.strftime('%Y-%m-%d')}", "",
             "| recipe | cold s (empty cache) | warm s (cache on disk) |", "|---|---|---|"]
    for name in args.recipes.split(","):
        recipe = STANDARD.get(name, name)
        with tempfile.TemporaryDirectory() as cache:
            cold = one(recipe, cache, args.shape)
            warm = one(recipe, cache, args.shape)
        lines.append(f"| {name} | {cold:.1f} | {warm:.1f} |")
        print(lines[-1], flush=True)
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
