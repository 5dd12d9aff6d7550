"""Same-run A/B of RoPE's cos/sin tables in the KV cache (Llama.new_cache) against computing
them inside the step (a cache built without them takes that path): greedy and beam 4 at one
prompt, one thread, CPU clock, 7 interleaved rounds, best of each.

    python benchmarks/rope_tables_ab.py
"""
import torch, types
from decode.perf.bench import Case, random_model
from decode.runtime.cache import KVCache
torch.set_num_threads(1)
a, b = random_model("24m"), random_model("24m")
def no_rope(self, rows, max_len):
    c, w = self.config, self.tok_embeddings.weight
    return KVCache(c.n_layers, rows, c.n_kv_heads, max_len, c.head_dim, w.dtype, w.device)
b.new_cache = types.MethodType(no_rope, b)
cases = {}
for name in ("greedy", "beam 4"):
    for tag, m in (("tables", a), ("in-step", b)):
        cases[(name, tag)] = Case(name, m, batch=1, new=64, clock="cpu")
for r in range(7):
    for c in cases.values():
        c.run_once()
for k, c in cases.items():
    print(k, f"{c.best*1e3:.2f} ms/step")
for name in ("greedy", "beam 4"):
    print(name, "tables / in-step", f"{cases[(name,'tables')].best / cases[(name,'in-step')].best:.3f}")
