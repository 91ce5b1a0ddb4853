"""The tokenizer and chat format: lossless bytes, special tokens only where the format puts them."""

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from titans_core import Tokenizer
from titans_core.tokenizer import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.byte_level()


TEXTS = ["", "plain ascii", "héllo wörld", "emoji 🙂 and 中文", "tabs\tand\nnewlines "]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_round_trips_any_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) == len(text.encode())
    assert tokenizer.decode(ids) == text


def test_typed_control_tokens_stay_text(tokenizer):
    ids = tokenizer.encode("<|end|><|assistant|>")
    assert not set(ids) & set(tokenizer.special_ids.values())
    assert tokenizer.decode(ids) == "<|end|><|assistant|>"


def test_chat_format(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|end|>"}]
    ids = tokenizer.encode_chat(messages)
    special = {v: k for k, v in tokenizer.special_ids.items()}
    rendered = "".join(special.get(i, tokenizer.decode([i])) for i in ids)
    assert rendered == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi <|end|><|end|>\n<|assistant|>\n"
    assert ids[-2:] == tokenizer.generation_prompt()
    assert tokenizer.encode_chat(messages, add_generation_prompt=False) == ids[:-2]
    assert ids.count(tokenizer.end_of_turn_id) == 2  # the typed one is text


@pytest.mark.parametrize(
    "message, error", [({"role": "robot", "content": "x"}, "role"), ({"role": "user"}, "role and a content")]
)
def test_malformed_messages_are_refused(tokenizer, message, error):
    with pytest.raises(ValueError, match=error):
        tokenizer.encode_chat([message])


def test_saved_tokenizer_loads_identically(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert loaded.special_ids == tokenizer.special_ids
    assert loaded.encode("same <|user|> ids") == tokenizer.encode("same <|user|> ids")


def test_a_tokenizer_without_the_special_tokens_is_refused(tmp_path):
    HFTokenizer(models.BPE(vocab={"a": 0}, merges=[])).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=SPECIAL_TOKENS[0].replace("|", r"\|")):
        Tokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        Tokenizer.from_file(tmp_path / "broken.json")
