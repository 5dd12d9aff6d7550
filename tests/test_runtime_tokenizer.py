"""Our tokenizers encode and decode exactly as transformers' tokenizers do."""
import json

import pytest

from decode.runtime.tokenizer import HFTokenizer, SentencePieceTokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["ROMEO: But soft!", "", " leading space", "trailing space ", "two  spaces\tand\ttabs",
         "line\nbreaks\n\n", "Café naïve déjà vu", "東京の日本語", "emoji 🙂 not in corpus",
         "digits 1234567", "ΑΒΓ Ελληνικά", "  ", "wherefore art thou"]


@pytest.fixture(scope="module")
def pair(sp_tokenizer_dir):
    ref = transformers.LlamaTokenizer.from_pretrained(sp_tokenizer_dir, legacy=True)
    return SentencePieceTokenizer(sp_tokenizer_dir / "tokenizer.model"), ref


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_encode_and_decode_match_llama_tokenizer(pair, text):
    ours, ref = pair
    ids = ours.encode(text)
    assert ids == ref.encode(text)
    assert ours.encode(text, bos=False) == ref.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids + [ours.eos_id]) == ref.decode(ids + [2], skip_special_tokens=True)


def test_sentencepiece_special_ids_and_decoding_of_arbitrary_ids(pair):
    ours, ref = pair
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, None)
    assert ours.vocab_size == len(ref)
    for start in range(0, ours.vocab_size, 37):
        ids = list(range(start, min(start + 23, ours.vocab_size)))
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def json_pair(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
    from llama_factory import CORPUS

    d = tmp_path_factory.mktemp("tokjson")
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tk.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": None}))
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"),
                                               bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return HFTokenizer(d / "tokenizer.json"), ref


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_encode_and_decode_match_transformers_fast(json_pair, text):
    ours, ref = json_pair
    ids = ours.encode(text)
    assert ids == ref.encode(text)
    assert ours.decode(ids + [ours.eos_id]) == ref.decode(ids + [2], skip_special_tokens=True)
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, None)
