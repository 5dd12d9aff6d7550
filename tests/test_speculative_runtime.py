"""Llama.verify: T tokens per row at the row's own cache slots, in one forward, as T single
decodes compute them; rejected slots roll back by not advancing the row's length."""
import torch

from decode.runtime import Llama, LlamaConfig

CONFIG = LlamaConfig(vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48)


def model():
    torch.manual_seed(0)
    return Llama(CONFIG).eval().requires_grad_(False)


def prompts(rows=3, length=6):
    tokens = torch.randint(0, 61, (rows, length), generator=torch.Generator().manual_seed(1))
    return tokens, torch.tensor([0, 2, 5][:rows])


def single_decodes(m, tokens, pad, extra):
    """Each row alone: prefill its prompt, then decode its extra tokens one at a time."""
    out = []
    for r in range(tokens.shape[0]):
        cache = m.new_cache(1, 24)
        m.prefill(cache, tokens[r:r + 1], pad[r:r + 1])
        logits = []
        for j, tok in enumerate(extra[r]):
            logits.append(m.decode(cache, torch.tensor([tok]), torch.tensor(tokens.shape[1] + j),
                                   pad[r:r + 1])[0])
        out.append(torch.stack(logits))
    return out


def test_verify_equals_single_decodes_with_rows_at_different_lengths():
    m = model()
    tokens, pad = prompts()
    # rows already hold 0, 2 and 1 decoded tokens: their next slots differ
    held = [[], [11, 12], [13]]
    drafts = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10], [20, 21, 22, 23]])
    want = single_decodes(m, tokens, pad, [h + d for h, d in zip(held, drafts.tolist())])
    cache = m.new_cache(3, 24)
    m.prefill(cache, tokens, pad)
    for j in range(2):  # the rows' earlier tokens; a row with none left writes a far slot
        has = [j < len(h) for h in held]
        tok = torch.tensor([[h[j] if ok else 0] for h, ok in zip(held, has)])
        got = m.verify(cache, tok, torch.tensor([6 + j if ok else 20 for ok in has]), pad)
        for r in range(3):
            if has[r]:
                assert (got[r, 0] - want[r][j]).abs().max() < 1e-5
    start = torch.tensor([6 + len(h) for h in held])
    # stale slots past each row's length (a rolled-back draft) must not be read
    for buf in (cache.k0, cache.v0, cache.k1, cache.v1):
        for r, s in enumerate(start.tolist()):
            buf[r, :, s:] = 1e4
    got = m.verify(cache, drafts, start, pad)
    assert got.shape == (3, 4, 61)
    for r, h in enumerate(held):
        assert (got[r] - want[r][len(h):]).abs().max() < 1e-5


def test_rolling_back_rejected_drafts_gives_the_logits_of_the_accepted_path():
    m = model()
    tokens, pad = prompts(rows=2)
    cache = m.new_cache(2, 24)
    m.prefill(cache, tokens, pad)
    start = torch.tensor([6, 6])
    m.verify(cache, torch.tensor([[1, 2, 3], [4, 5, 6]]), start, pad)
    # row 0 keeps 1 token, row 1 keeps 2; then each goes on with new tokens from there
    got = m.verify(cache, torch.tensor([[30, 31], [32, 33]]), torch.tensor([7, 8]), pad)
    want = single_decodes(m, tokens, pad, [[1, 30, 31], [4, 5, 32, 33]])
    assert (got[0] - want[0][1:]).abs().max() < 1e-5
    assert (got[1] - want[1][2:]).abs().max() < 1e-5


def test_verify_compiles_fullgraph_and_matches_eager():
    m = model()
    tokens, pad = prompts()
    caches = [m.new_cache(3, 24) for _ in range(2)]
    for c in caches:
        m.prefill(c, tokens, pad)
    start, drafts = torch.tensor([6, 7, 8]), torch.tensor([[3, 4], [7, 8], [20, 21]])
    eager = m.verify(caches[0], drafts, start, pad)
    compiled = torch.compile(m.verify, fullgraph=True, dynamic=False)(caches[1], drafts, start, pad)
    assert (eager - compiled).abs().max() < 1e-5
