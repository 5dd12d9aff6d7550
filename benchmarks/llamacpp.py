"""llama.cpp side by side (issue 21, item 5): the benchmark checkpoint (benchmarks/'s 24.4M
llama, random weights) written as GGUF in f32 and q8_0, llama.cpp's logits checked against
decode's, then greedy batch 1 timed in both on the same weights and the same number of
threads, runs interleaved: llama.cpp f32 next to decode fp32, llama.cpp q8_0 next to decode
int8 (weight-only, per channel: the same fp32 weights quantized each its own way).

    pip install -e '.[bench]'        # gguf, and llama-cpp-python (builds llama.cpp: minutes)
    python benchmarks/llamacpp.py --threads 1,2 --rounds 6 --out benchmarks/results-llamacpp.md

Each thread count runs in a process of its own: inductor compiles the thread count into
the kernels of a compiled step, so torch's threads cannot change under one.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _gguf import write_gguf
from _llamacpp import LlamaCpp, available
from decode.compiler.engine import run
from decode.perf.bench import Case, bandwidth, random_model, roofline_ms
from standard import emit

PAIRS = (("f32", "fp32"), ("q8_0", "int8"))  # (llama.cpp weights, decode weights)


def ours_ms(case: Case, clock: str) -> tuple[float, list[int]]:
    """One timed run of a decode case: (seconds per step, the first prompt's new ids)."""
    t = {}
    outs = run(case.plan, case.model, case.prompts, seed=0, timings=t)
    return t["loop_cpu_s" if clock == "cpu" else "loop_s"] / t["steps"], outs[0].sequences[0].ids


def one_thread_count(args) -> dict:
    """Everything measured at one thread count (this process's)."""
    torch.set_num_threads(args.threads)
    if args.clock == "auto":
        args.clock = "cpu" if args.threads == 1 else "wall"
    models = {dt: random_model(args.shape, dtype=dt) for _, dt in PAIRS}
    cases = {dt: Case("greedy", m, new=args.new, clock=args.clock) for dt, m in models.items()}
    prompt = cases["fp32"].prompts[0]
    lcs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q, _ in PAIRS:
            lcs[q] = LlamaCpp(write_gguf(models["fp32"], Path(tmp) / f"bench-{q}.gguf", q), args.threads)
    with torch.inference_mode():
        ref, ref8 = (models[dt](torch.tensor([prompt]))[0].numpy() for dt in ("fp32", "int8"))
    got = {q: lcs[q].logits(prompt) for q, _ in PAIRS}
    check = {"llama.cpp f32 - decode fp32": got["f32"] - ref, "llama.cpp q8_0 - decode fp32": got["q8_0"] - ref,
             "decode int8 - decode fp32": ref8 - ref, "llama.cpp q8_0 - decode int8": got["q8_0"] - ref8}
    check = {k: float(np.abs(v).max()) for k, v in check.items()}
    best = {name: float("inf") for name in ("llama.cpp f32", "decode fp32", "llama.cpp q8_0", "decode int8")}
    ids, bw = {}, 0.0
    for r in range(args.rounds):
        bw = max(bw, bandwidth(torch.device("cpu")))  # each round, best kept, as the timings are
        for q, dt in PAIRS:  # pairs side by side, each round
            time.sleep(0.05)  # let the other library's worker threads stop spinning
            s, (ids[f"llama.cpp {q}"],) = lcs[q].generate([prompt], args.new, "greedy", clock=args.clock)
            best[f"llama.cpp {q}"] = min(best[f"llama.cpp {q}"], s)
            time.sleep(0.05)
            s, ids[f"decode {dt}"] = ours_ms(cases[dt], args.clock)
            best[f"decode {dt}"] = min(best[f"decode {dt}"], s)
        print(f"threads {args.threads} round {r + 1}/{args.rounds}: "
              + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in best.items()), file=sys.stderr, flush=True)
    roof = {dt: roofline_ms(models[dt], 1, len(prompt) + args.new, bw) for _, dt in PAIRS}
    same = {q: sum(a == b for a, b in zip(ids[f"llama.cpp {q}"], ids[f"decode {dt}"])) for q, dt in PAIRS}
    return {"threads": args.threads, "clock": args.clock, "ms": {k: v * 1e3 for k, v in best.items()}, "logits_max_abs": check,
            "roofline_ms": roof, "bandwidth_gbs": bw / 1e9, "greedy_same_tokens": same, "new": args.new,
            "logits_span": float(ref.max() - ref.min()), "compile_s": {dt: c.compile_s for dt, c in cases.items()}}


def table(results: list[dict], args) -> list[str]:
    r0 = results[0]
    clocks = ", ".join(f"{r['clock']} clock at {r['threads']}" for r in results)
    lines = [f"shape {args.shape}, greedy, 1 prompt of 16 tokens, {args.new} new tokens, {clocks}, "
             f"best of {args.rounds} rounds (llama.cpp and decode alternating in each), {time.strftime('%Y-%m-%d')}; "
             f"llama.cpp and decode on the same fp32 weights (q8_0 and int8: each quantized its own way), "
             "float32 KV cache in both", "",
             "| threads | llama.cpp f32 ms/token | decode fp32 | decode / llama.cpp | decode / roofline | "
             "llama.cpp q8_0 | decode int8 | decode / llama.cpp | decode / roofline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ms, rf = r["ms"], r["roofline_ms"]
        lines.append(f"| {r['threads']} | {ms['llama.cpp f32']:.2f} | {ms['decode fp32']:.2f} | "
                     f"{ms['decode fp32'] / ms['llama.cpp f32']:.2f} | {ms['decode fp32'] / rf['fp32']:.2f} | "
                     f"{ms['llama.cpp q8_0']:.2f} | {ms['decode int8']:.2f} | "
                     f"{ms['decode int8'] / ms['llama.cpp q8_0']:.2f} | {ms['decode int8'] / rf['int8']:.2f} |")
    if len(results) > 1:
        a, b = results[0]["ms"], results[-1]["ms"]
        lines += ["", f"{results[-1]['threads']} threads over {results[0]['threads']}: " + ", ".join(
            f"{k} {a[k] / b[k]:.2f}x" for k in a)]
    lines += ["", "Logits of the prompt (all 16 positions), max abs difference: "
              + ", ".join(f"{k} {v:.2e}" for k, v in r0["logits_max_abs"].items())
              + f" (logits span {r0['logits_span']:.2f})"
              + f". Greedy tokens equal to decode's ({r0['new']}): "
              + ", ".join(f"{q} {n}" for q, n in r0["greedy_same_tokens"].items())
              + ". Roofline: weight bytes (+ KV) / copy bandwidth, best of one measure a round ("
              + ", ".join(f"{r['bandwidth_gbs']:.1f} GB/s at {r['threads']}" for r in results) + ")."]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24m")
    ap.add_argument("--threads", default="1,2", help="thread counts, each in its own process")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--clock", default="auto", choices=("auto", "wall", "cpu"),
                    help="cpu: the calling thread's CPU time, where both libraries compute at one "
                         "thread (robust on a shared machine); auto: cpu at 1 thread, wall above")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one thread count, as JSON
    args = ap.parse_args(argv)
    why = available()
    if why:
        print(f"llama.cpp side by side needs the [bench] extra: {why}", file=sys.stderr)
        return 2
    counts = [int(t) for t in args.threads.split(",")]
    if args.json:
        args.threads = counts[0]
        print(json.dumps(one_thread_count(args)))
        return 0
    results = []
    for t in counts:
        cmd = [sys.executable, __file__, "--json", "--threads", str(t), "--shape", args.shape,
               "--rounds", str(args.rounds), "--new", str(args.new), "--clock", args.clock]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if out.returncode:
            print(f"the run at {t} thread(s) failed (exit {out.returncode})", file=sys.stderr)
            return out.returncode
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return emit(table(results, args), args.out)


if __name__ == "__main__":
    sys.exit(main())
