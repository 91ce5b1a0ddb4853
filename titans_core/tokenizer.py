"""Text <-> token ids with HF ``tokenizers``, and the chat format the models are trained and served with.

A checkpoint ships a ``tokenizer.json``; without one the byte-level tokenizer (256 byte tokens, no
merges) encodes any text. Both carry the same special tokens, so the chat format is the same::

    <|system|>
    You are terse.<|end|>
    <|user|>
    Hello<|end|>
    <|assistant|>

A reply ends with ``<|end|>``. Message contents are encoded as plain text: a user typing
``<|end|>`` gets those characters, never the special token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers
from tokenizers.decoders import DecodeStream

SPECIAL_TOKENS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
ROLES = ("system", "user", "assistant")
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
    """A ``tokenizers.Tokenizer`` that has the special tokens of :data:`SPECIAL_TOKENS`."""

    def __init__(self, tokenizer: HFTokenizer):
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special token(s) {', '.join(missing)}")
        tokenizer.encode_special_tokens = True  # text never turns into control tokens
        self._tokenizer = tokenizer
        self.special_ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        self.end_of_text_id = self.special_ids["<|endoftext|>"]
        self.end_of_turn_id = self.special_ids["<|end|>"]

    @classmethod
    def byte_level(cls) -> Tokenizer:
        """Every byte is a token: no training, no unknown text, about one token per character."""
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        model = models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[])
        tokenizer = HFTokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(tokenizer)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            if isinstance(error, ValueError):
                raise
            raise ValueError(f"{path} is not a valid tokenizer.json: {error}") from error

    def save(self, path: str | Path) -> None:
        self._tokenizer.save(str(path))

    def to_str(self) -> str:
        """The tokenizer as ``tokenizer.json`` text (for a process that tokenises on its own)."""
        return self._tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_marked(self, text: str, start: int, end: int) -> tuple[list[int], list[bool]]:
        """:meth:`encode`, and for each id whether it covers a character of ``text[start:end]``:
        the tokens of a value inside a sentence, exactly as the whole sentence encodes."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        marks = [a < end and b > start for a, b in encoding.offsets]
        return encoding.ids, marks

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` with special tokens left out; bytes of a split character decode as U+FFFD."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    def stream_decoder(self) -> Callable[[int], str]:
        """Text of one more token at a time; "" while a character's bytes are still incomplete.

        The pieces join to exactly :meth:`decode` of all the tokens so far, except bytes still
        waiting for the rest of their character.
        """
        stream = DecodeStream(skip_special_tokens=True)
        return lambda token: stream.step(self._tokenizer, token) or ""

    def encode_message(self, role: str, content: str) -> list[int]:
        """One chat turn: ``<|role|>\\n`` content ``<|end|>\\n``."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message content must be a string, got {type(content).__name__}")
        newline = self.encode("\n")
        return [self.special_ids[f"<|{role}|>"], *self.encode("\n" + content), self.end_of_turn_id, *newline]

    def encode_chat(
        self, messages: Iterable[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Messages ``{"role", "content"}`` in order, then the assistant's turn opened for a reply."""
        ids: list[int] = []
        for message in messages:
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise ValueError(f"a message must have a role and a content, got {message!r}")
            ids += self.encode_message(message["role"], message["content"])
        if add_generation_prompt:
            ids += self.generation_prompt()
        return ids

    def generation_prompt(self) -> list[int]:
        """The ids that open the assistant's turn."""
        return [self.special_ids["<|assistant|>"], *self.encode("\n")]
