"""The trained byte-level BPE: the chat format's special tokens, exact round trips, digits apart."""

from __future__ import annotations

import pytest

from titans_core.tokenizer import SPECIAL_TOKENS, Tokenizer
from titans_core.train import train_tokenizer
from titans_core.train.corpus import read_texts


@pytest.fixture(scope="module")
def trained(corpus) -> Tokenizer:
    return train_tokenizer([d.text for d in read_texts([corpus])], vocab_size=400)


def test_vocab_size_and_special_tokens(trained):
    assert trained.vocab_size == 400
    ids = [trained.special_ids[t] for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS) and max(ids) < 400
    # merges were learnt: a frequent word of the corpus is one token, far fewer tokens than bytes
    assert len(trained.encode(" the")) == len(trained.encode(" king")) == 1
    text = "Ham.\nThe king and the queen speak of love and death.\n"
    assert len(trained.encode(text)) < len(text.encode()) / 2


@pytest.mark.parametrize(
    "text",
    [
        "Hor.\nNoble friend, the night is cold.\n",
        "naïve café — 東京 🌊\n\n  indented\ttabs\r\n",
        "a user typing <|end|> or <|user|> gets text, not control tokens",
        "",
    ],
)
def test_round_trip(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert not set(ids) & set(trained.special_ids.values())


def test_digits_are_single_tokens(trained):
    for number in ("48213", "1000", "99"):
        ids = trained.encode(f"The passkey is {number}.")
        pieces = [trained.decode([i]) for i in ids]
        assert list(number) == [p for p in pieces if p.strip().isdigit()]
        assert all(len(p.strip()) <= 1 for p in pieces if any(c.isdigit() for c in p))


def test_chat_format_and_file_round_trip(trained, tmp_path):
    chat = trained.encode_chat([{"role": "user", "content": "What is the passkey?"}])
    assert chat[0] == trained.special_ids["<|user|>"]
    assert chat[-2:] == [trained.special_ids["<|assistant|>"], *trained.encode("\n")]
    assert trained.end_of_turn_id in chat
    trained.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(tmp_path / "tokenizer.json")
    text = "King.\nThe passkey is 48213, sweet lady.\n"
    assert loaded.encode(text) == trained.encode(text)
    assert loaded.encode_chat([{"role": "user", "content": text}]) == trained.encode_chat(
        [{"role": "user", "content": text}]
    )
    assert loaded.special_ids == trained.special_ids


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["some text"], vocab_size=100)
