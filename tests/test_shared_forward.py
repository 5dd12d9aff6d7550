"""The model's forward is compiled once per (model, shapes) and shared by every recipe: a
second recipe compiles its selection only, and the forward's graph holds nothing of a recipe
(torch's graph cache finds it again for another recipe, on another model of the same shape)."""
import pytest

import decode
from decode.compiler import forward
from decode.compiler.kernel_cache import watch_compiles


def _llama(tmp_path, seed):
    from llama_factory import make_hf_llama

    return decode.load(str(make_hf_llama(tmp_path / f"m{seed}", vocab=64, dim=16, layers=1, heads=2, kv_heads=1,
                                         ff=32, seed=seed)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two models of one shape, and a compile cache of this module's own (so that a hit in
    it comes from these tests, not from an earlier run's graphs)."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    path = tmp_path_factory.mktemp("shared")
    with temporary_cache_dir(str(path / "inductor")):
        yield _llama(path, 0), _llama(path, 1)


def _compiles(model, recipe, prompts, watch=None):
    """(what compiled, in order; the compiled run's sequences; the eager run's)."""
    seen = []

    def note(starting, what):
        if starting:
            seen.append(what)
        if watch is not None:
            watch(starting, what)

    with watch_compiles(note):
        got = decode.generate(model, recipe, prompts, seed=3)
    want = decode.generate(model, recipe, prompts, seed=3, compile=False)
    return seen, *([(s.ids, round(s.score, 4)) for c in out for s in c.sequences] for out in (got, want))


def test_a_second_recipe_compiles_its_selection_and_reuses_the_models_forward(models):
    from torch._dynamo.utils import counters

    m, _ = models
    prompts = [[1, 2, 3], [4, 5]]
    graphs = counters["stats"]["unique_graphs"]
    seen, got, want = _compiles(m, "greedy | max 5", prompts)
    assert seen == [forward.SELECTION, forward.FORWARD] and got == want
    assert counters["stats"]["unique_graphs"] == graphs + 2
    # same rows: the forward is the one greedy compiled (no new trace of the model)
    seen, got, want = _compiles(m, "sample | topp 0.9 temp 0.7 | max 5", prompts)
    assert seen == [forward.SELECTION] and got == want
    assert counters["stats"]["unique_graphs"] == graphs + 3
    # beams read the cache through parent pointers: a forward of their own, then shared again
    seen, got, want = _compiles(m, "beam 2 | max 5", prompts)
    assert seen == [forward.SELECTION, forward.FORWARD] and got == want
    seen, got, want = _compiles(m, "beam 2 | diverse groups=2 penalty=0.5 | max 5", prompts)
    assert seen == [forward.SELECTION] and got == want
    assert counters["stats"]["unique_graphs"] == graphs + 6


def test_the_forward_graph_holds_no_recipe_and_no_weight(models):
    """Another model of the same shape (other weights) and another recipe: its forward is
    traced anew (a model keeps its own), and torch's graph cache hits: nothing of the recipe
    or of the weights went into the graph's key."""
    from torch._dynamo.utils import counters

    a, b = models
    decode.generate(a, "greedy | max 5", [[1, 2, 3], [4, 5]])  # compiled already if the test above ran
    window = {}

    def watch(starting, what):
        if what == forward.FORWARD:
            window[starting] = (counters["aot_autograd"]["autograd_cache_hit"] + counters["inductor"]["fxgraph_cache_hit"],
                                counters["aot_autograd"]["autograd_cache_miss"] + counters["inductor"]["fxgraph_cache_miss"])

    seen, got, want = _compiles(b, "sample | topk 5 | max 3", [[6, 7], [8, 9, 10]], watch)
    assert forward.FORWARD in seen and got == want
    hits, misses = (window[False][i] - window[True][i] for i in range(2))
    assert hits >= 1 and misses == 0, window


def test_searches_whose_forward_is_their_own_keep_it_in_their_step():
    from decode.compiler.plan import compile as lower
    from decode.compiler.search.base import SearchConfig

    def search(recipe):
        plan = lower(recipe)
        return plan.search(SearchConfig(batch=1, params=plan.search_params, modifiers=plan.modifiers,
                                        sampling=plan.sampling, eos=(2,), pad=2))

    assert forward.shared(search("beam 4 | diverse groups=2 penalty=0.5"))
    assert forward.shared(search("beam 4 | diverse groups=2 penalty=0.5 kind=embedding"))  # hidden, unchanged
    assert not forward.shared(search("contrastive k=4 alpha=0.6"))  # looks ahead
    assert forward.shared(search("beam 4 | npad sigma=0.5"))  # its noise is W·z beside the forward's logits

    class Noisy(type(search("beam 4"))):  # a plugin search that changes the state before the head
        def before_head(self, keys, t, hp):
            return lambda h: h + 1.0
    assert not forward.shared(Noisy(search("beam 4").cfg))
