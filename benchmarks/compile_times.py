"""Compile time of the standard recipes, one recipe at a time, each in fresh processes:

- machine: the first compile on a fresh machine (an empty temp directory): inductor
  probes the CPU's vector ISAs (six small g++ builds, ~9 s here) and precompiles its
  kernel header, once per machine. Measured once, with greedy.
- cold: a recipe structure this machine has not compiled before (an empty inductor
  cache, after a trivial compile has done the machine's probes in it): what a user pays
  the first time they run a new recipe.
- warm: the same recipe again in a new process (the cache the cold run left on disk).

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

PROBE = "import torch; torch.compile(lambda x: (x.exp() + 1).sum())(torch.ones(64))"


def one(recipe: str, env: dict, shape: str) -> float:
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
             f"{time.strftime('%Y-%m-%d')}", ""]
    with tempfile.TemporaryDirectory() as fresh:  # a machine that never compiled anything
        env = {**os.environ, "TMPDIR": fresh, "TORCHINDUCTOR_CACHE_DIR": os.path.join(fresh, "cache")}
        first = one(STANDARD["greedy"], env, args.shape)
    lines += [f"First compile on a fresh machine (greedy; includes the one-time ISA probes and "
              f"header precompile): {first:.1f} s", "",
              "| recipe | cold s (new structure) | warm s (cache on disk) |", "|---|---|---|"]
    print(lines[-4], flush=True)
    for name in args.recipes.split(","):
        recipe = STANDARD.get(name, name)
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True)
            cold = one(recipe, env, args.shape)
            warm = one(recipe, env, args.shape)
        lines.append(f"| {name} | {cold:.1f} | {warm:.1f} |")
        print(lines[-1], flush=True)
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
