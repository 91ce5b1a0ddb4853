"""``TitansTokenizerFast``: a model's ``tokenizer.json`` as a Transformers tokenizer with the chat format.

``apply_chat_template(..., tokenize=True)`` gives exactly the tokens the server feeds
(:meth:`titans_core.Tokenizer.encode_chat`), also when a message's content holds the text of a
special token such as ``<|end|>``: that stays plain text. Rendered to a string
(``tokenize=False``) the chat cannot keep that distinction, as with any Transformers model.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer as RustTokenizer
from transformers import BatchEncoding, PreTrainedTokenizerFast

from titans_core.tokenizer import Tokenizer

# The chat format of titans_core.tokenizer as a Jinja template ("developer" is OpenAI's "system").
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set role = 'system' if message['role'] == 'developer' else message['role'] -%}"
    "{%- if role not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('role must be system, user or assistant, got ' ~ message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' ~ role ~ '|>' ~ '\n' ~ message['content'] }}"
    "{%- if not (loop.last and continue_final_message) -%}{{ '<|end|>\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)
SPECIAL_TOKENS = {"eos_token": "<|end|>", "pad_token": "<|endoftext|>"}


class TitansTokenizerFast(PreTrainedTokenizerFast):
    """The project's byte-level BPE from ``tokenizer.json``; ``<|end|>`` ends a turn (the EOS)."""

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # tokenizer.json loads as it is: this class only adds the chat format
        return super().convert_to_native_format(trust_remote_code=True, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any):
        for name, token in SPECIAL_TOKENS.items():
            kwargs.setdefault(name, token)
        if kwargs.get("chat_template") is None:
            kwargs["chat_template"] = CHAT_TEMPLATE
        super().__init__(*args, **kwargs)

    def titans_tokenizer(self) -> Tokenizer:
        """The project's tokenizer over a copy of this one's backend (it never parses special text)."""
        return Tokenizer(RustTokenizer.from_str(self.backend_tokenizer.to_str()))

    def encode_next_turn(
        self, reply_ids: list[int], messages: list[dict], add_generation_prompt: bool = True
    ) -> list[int]:
        """The tokens to feed a session after its reply ``reply_ids``: the reply's turn closed as the
        server closes it (``<|end|>`` unless the reply ended with it, then a newline), then
        ``messages``. Given to ``generate`` with the session's cache, they continue it exactly."""
        encoder = self.titans_tokenizer()
        ended = bool(reply_ids) and reply_ids[-1] == encoder.end_of_turn_id
        closing = ([] if ended else [encoder.end_of_turn_id]) + encoder.encode("\n")
        return closing + _encode(encoder, _messages(messages), add_generation_prompt, False)

    def apply_chat_template(
        self,
        conversation: Any,
        tools: Any = None,
        documents: Any = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tokenize: bool = True,
        return_tensors: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Token ids from the project's own chat encoder; anything it does not cover (a string, a
        custom template, tools, documents, masks, padding) goes to Transformers' template path."""
        plain = (
            tokenize
            and tools is None
            and documents is None
            and chat_template is None
            and continue_final_message in (False, True)
            and not any(kwargs.get(k) for k in ("return_assistant_tokens_mask", "padding", "truncation"))
        )
        if not plain:
            return super().apply_chat_template(
                conversation,
                tools=tools,
                documents=documents,
                chat_template=chat_template,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tokenize=tokenize,
                return_tensors=return_tensors,
                return_dict=return_dict,
                **kwargs,
            )
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible")
        first = conversation[0] if conversation else None
        batched = isinstance(first, list | tuple) or hasattr(first, "messages")
        chats = [_messages(c) for c in conversation] if batched else [_messages(conversation)]
        encoder = self.titans_tokenizer()
        ids = [_encode(encoder, chat, add_generation_prompt, bool(continue_final_message)) for chat in chats]
        if return_tensors is not None and len({len(row) for row in ids}) > 1:
            raise ValueError("conversations of different lengths need padding=True for tensors")
        encoding = BatchEncoding(
            {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]},
            tensor_type=return_tensors,
        )
        if not batched and return_tensors is None:
            encoding = BatchEncoding({k: v[0] for k, v in encoding.items()})
        return encoding if return_dict else encoding["input_ids"]


def _messages(conversation: Any) -> list[dict]:
    """A conversation as dicts (a pipeline's ``Chat`` carries them in ``messages``)."""
    return [dict(m) for m in getattr(conversation, "messages", conversation)]


def _encode(encoder: Tokenizer, messages: list[dict], generation_prompt: bool, open_last: bool) -> list[int]:
    """The server's chat tokens (``developer`` read as ``system``); ``open_last`` leaves the last
    message's turn open for the model to continue."""
    plain = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
        for m in messages
    ]
    if not open_last:
        return encoder.encode_chat(plain, add_generation_prompt=generation_prompt)
    *before, last = plain
    closed = encoder.encode_message(last["role"], last["content"])
    return encoder.encode_chat(before, add_generation_prompt=False) + closed[: -1 - len(encoder.encode("\n"))]
