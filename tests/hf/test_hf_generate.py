"""generate() with the session's memory as its cache: the server's greedy replies, token for token."""

from __future__ import annotations

import httpx
import pytest
import torch
from openai import OpenAI
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from titans_core.hf import TitansCache, TitansForCausalLM
from titans_core.model import SHIPPED
from titans_core.state import from_bytes

DEFAULT = SHIPPED / "default"
TURNS = ["My locker code is 4721.", "I like walking by the sea.", "What is my locker code?"]
MAX_TOKENS = 40


@pytest.fixture(scope="module")
def hf():
    return AutoModelForCausalLM.from_pretrained(DEFAULT).eval(), AutoTokenizer.from_pretrained(DEFAULT)


def greedy(model, tokens: list[int], cache: TitansCache, eos: int) -> list[int]:
    out = model.generate(
        torch.tensor([tokens]), cache=cache, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=eos
    )
    return out[0, len(tokens) :].tolist()


def test_a_session_through_generate_equals_the_servers_session(hf, start_server):
    """Each turn's greedy reply equals the server's, token for token; the server's exported state
    continues in the HF cache, and the HF cache's state continues on the server."""
    model, tokenizer = hf
    session_id = "hf-session"
    server = start_server(None, "--model", "default")
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    http = httpx.Client(base_url=server.url, timeout=60)
    end = tokenizer.eos_token_id
    cache, reply, exported = TitansCache(), None, None
    for turn, text in enumerate(TURNS):
        message = [{"role": "user", "content": text}]
        if turn == 1:  # from here on the HF side continues from the state the server exported
            exported = http.get(f"/v1/sessions/{session_id}/state").content
            cache = TitansCache.from_bytes(exported, model.config.to_titans())
            tokens = tokenizer.apply_chat_template(message, add_generation_prompt=True)["input_ids"]
        else:
            tokens = (
                tokenizer.encode_next_turn(reply, message)
                if reply
                else tokenizer.apply_chat_template(message, add_generation_prompt=True)["input_ids"]
            )
        answer = client.chat.completions.create(
            model="default",
            messages=message,
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_body={"session_id": session_id},
        )
        reply = greedy(model, tokens, cache, end)
        assert len(reply) == answer.usage.completion_tokens
        assert tokenizer.decode(reply, skip_special_tokens=True) == answer.choices[0].message.content
    # and back: the HF cache, its last turn closed as the server closes it, serves the next turn
    closing = tokenizer.encode_next_turn(reply, [], add_generation_prompt=False)
    model(torch.tensor([closing]), cache=cache)
    assert http.put(f"/v1/sessions/{session_id}-hf/state", content=cache.to_bytes()).status_code == 200
    question = [{"role": "user", "content": "Say it again."}]
    answers = [
        client.chat.completions.create(
            model="default",
            messages=question,
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_body={"session_id": sid},
        )
        .choices[0]
        .message.content
        for sid in (session_id, f"{session_id}-hf")
    ]
    assert answers[0] == answers[1]
    config = model.config.to_titans()
    again = from_bytes(TitansCache.from_bytes(exported, config).to_bytes(), config)
    original = from_bytes(exported, config)
    assert again.position == original.position
    assert all(torch.equal(t, original.named_tensors()[k]) for k, t in again.named_tensors().items())


def test_a_second_generate_feeds_only_the_new_tokens(hf):
    model, tokenizer = hf
    fed: list[int] = []
    hook = model.embed.register_forward_hook(lambda module, args, out: fed.extend(args[0].flatten().tolist()))
    try:
        cache = TitansCache()
        first = tokenizer.apply_chat_template(
            [{"role": "user", "content": TURNS[0]}], add_generation_prompt=True
        )
        reply = greedy(model, first["input_ids"], cache, tokenizer.eos_token_id)
        assert fed == first["input_ids"] + reply  # generate's last token fed too: the state is the text
        assert cache.get_seq_length() == len(fed) == cache.tokens_fed
        fed.clear()
        new = tokenizer.encode_next_turn(reply, [{"role": "user", "content": TURNS[2]}])
        second = greedy(model, new, cache, tokenizer.eos_token_id)
        assert fed == new + second
        fed.clear()
        # the whole sequence again, then more: only the more is fed
        whole = torch.tensor([new + second + new[-3:]])
        model.generate(whole, cache=cache, max_new_tokens=1, do_sample=False)
        assert fed[:3] == new[-3:] and len(fed) == 4
    finally:
        hook.remove()


def test_the_pipeline_chats_and_completes_and_stops_at_the_end_of_a_turn(hf):
    model, tokenizer = hf
    chat = pipeline("text-generation", model=model, tokenizer=tokenizer)
    out = chat([{"role": "user", "content": "Hello!"}], max_new_tokens=MAX_TOKENS, do_sample=False)
    reply = out[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and reply["content"].strip()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True)
    alone = greedy(model, ids["input_ids"], TitansCache(), tokenizer.eos_token_id)
    assert alone[-1] == tokenizer.eos_token_id and len(alone) < MAX_TOKENS
    assert reply["content"] == tokenizer.decode(alone, skip_special_tokens=True)
    text = chat("To be, or not to be", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("To be, or not to be") and len(text) > len("To be, or not to be")


def test_padding_is_refused_rather_than_written_into_the_memory():
    model = TitansForCausalLM.from_titans("tiny-random")
    with pytest.raises(ValueError, match="padding"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[0, 1, 1]]))


def test_beam_search_runs_with_a_memory_per_beam(hf):
    model, tokenizer = hf
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True)
    cache = TitansCache()
    out = model.generate(
        torch.tensor([ids["input_ids"]]), cache=cache, num_beams=3, do_sample=False, max_new_tokens=8
    )
    assert out.shape[0] == 1 and out.shape[1] > len(ids["input_ids"])
    assert cache.batch_size == 3  # each beam's own memory, as the README says: not a session to continue
