"""Shared, session-scoped test fixtures (made once: training a tokenizer costs ~1 s)."""
import pytest


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory):
    """A directory with a tiny trained tokenizer.model and its transformers LlamaTokenizer files."""
    from llama_factory import make_sp_tokenizer

    return make_sp_tokenizer(tmp_path_factory.mktemp("sp")).parent


@pytest.fixture
def restore_catalogue():
    """The test leaves the clause catalogue as it found it (plugins register clauses)."""
    from decode.dsl import CATALOGUE

    saved = dict(CATALOGUE)
    yield
    CATALOGUE.clear()
    CATALOGUE.update(saved)
