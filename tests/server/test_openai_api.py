"""The OpenAI-compatible endpoints, driven by the official openai package and by raw HTTP."""

import json

import pytest
from openai import BadRequestError

GREEDY = dict(model="tiny-random", temperature=0, max_tokens=8)


def test_models_lists_the_served_model_then_its_alias(openai_client):
    assert [m.id for m in openai_client.models.list().data] == ["tiny-random", "default"]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/completions", {"prompt": "x"}),
    ],
)
def test_a_model_not_served_is_openai_404_model_not_found(client, path, body):
    for stream in (False, True):
        response = client.post(path, json={**body, "model": "gpt-4", "stream": stream, "max_tokens": 1})
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "not_found_error",
            "model",
            "model_not_found",
        )
        assert "'gpt-4'" in error["message"]
    for name in ("tiny-random", "default"):
        assert client.post(path, json={**body, "model": name, "max_tokens": 1}).status_code == 200


def test_chat_completion_has_openai_shape_and_usage(openai_client):
    reply = openai_client.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], **GREEDY)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_equals_the_whole_reply_and_ends_with_usage(openai_client):
    messages = [{"role": "user", "content": "Count with me"}]
    whole = openai_client.chat.completions.create(messages=messages, **GREEDY)
    chunks = list(
        openai_client.chat.completions.create(
            messages=messages, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_completions_stream_and_not(openai_client):
    whole = openai_client.completions.create(prompt="Once upon", **GREEDY)
    streamed = openai_client.completions.create(prompt="Once upon", stream=True, **GREEDY)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    assert whole.object == "text_completion" and whole.usage.completion_tokens <= 8


def test_a_seed_makes_sampling_reproducible(openai_client):
    settings = dict(model="tiny-random", temperature=1.0, max_tokens=12, seed=7)
    runs = [openai_client.completions.create(prompt="Seeded", **settings).choices[0].text for _ in range(2)]
    assert runs[0] == runs[1]


def test_max_tokens_min_tokens_and_ignore_eos(client):
    body = {"prompt": "x", "max_tokens": 5, "min_tokens": 5, "ignore_eos": True, "temperature": 0}
    reply = client.post("/v1/completions", json=body).json()
    assert reply["usage"]["completion_tokens"] == 5 and reply["choices"][0]["finish_reason"] == "length"


def test_a_session_remembers_and_dedupes_resent_history(openai_client, client, session_id):
    first = [{"role": "user", "content": "My name is Ada."}]
    reply = openai_client.chat.completions.create(
        messages=first, extra_headers={"X-Session-Id": session_id}, **GREEDY
    )
    after_first = client.get(f"/v1/sessions/{session_id}").json()
    assert after_first["version"] == 1 and after_first["tokens_seen"] > 0
    # A stock client resends the history: only the new message may reach the memory.
    history = [*first, {"role": "assistant", "content": reply.choices[0].message.content}]
    question = {"role": "user", "content": "What is my name?"}
    second = openai_client.chat.completions.create(
        messages=[*history, question], extra_body={"session_id": session_id}, **GREEDY
    )
    after_second = client.get(f"/v1/sessions/{session_id}").json()
    assert after_second["version"] == 2
    added = after_second["tokens_seen"] - after_first["tokens_seen"]
    assert added == second.usage.prompt_tokens + second.usage.completion_tokens + 1 + (
        second.choices[0].finish_reason != "stop"
    )  # the reply's closing "<|end|>" (when it was cut) and newline are fed too
    assert second.usage.prompt_tokens < 40  # the new turn only, not the history again


def test_memory_changes_what_the_session_says(openai_client, session_id):
    prompt = dict(prompt="The same words", **GREEDY)
    fresh = openai_client.completions.create(**prompt).choices[0].text
    openai_client.completions.create(
        prompt="Something else entirely " * 8, extra_body={"session_id": session_id}, **GREEDY
    )
    remembered = (
        openai_client.completions.create(**prompt, extra_body={"session_id": session_id}).choices[0].text
    )
    assert remembered != fresh


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, "max_tokens"),
    ],
)
def test_bad_requests_get_400_in_openai_shape(client, body, param):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and param in (error["param"] or "") + error["message"]


def test_the_sdk_raises_on_bad_requests(openai_client):
    with pytest.raises(BadRequestError):
        openai_client.chat.completions.create(
            messages=[{"role": "user", "content": "x"}], model="tiny-random", n=3
        )


def test_a_bad_session_header_is_refused(client):
    body = {"messages": [{"role": "user", "content": "x"}]}
    response = client.post("/v1/chat/completions", json=body, headers={"X-Session-Id": "bad id!"})
    assert response.status_code == 400


def test_malformed_json_is_400(client):
    response = client.post("/v1/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] is None  # not the byte offset of the fault


def test_stream_events_are_sse_with_done(client):
    body = {"prompt": "hi", "stream": True, "max_tokens": 3, "temperature": 0}
    with client.stream("POST", "/v1/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert all("choices" in json.loads(line[6:]) for line in lines[:-1])


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_cuts_the_reply_before_it(openai_client, stream):
    settings = dict(
        prompt="Stop me", model="tiny-random", temperature=0, max_tokens=24, extra_body={"ignore_eos": True}
    )
    full = openai_client.completions.create(**settings).choices[0].text
    assert len(full) >= 6
    stop = full[4:6]
    if stream:
        chunks = list(openai_client.completions.create(stop=stop, stream=True, **settings))
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        reply = openai_client.completions.create(stop=stop, **settings).choices[0]
        text, finish = reply.text, reply.finish_reason
    assert text == full[: full.find(stop)] and finish == "stop"


def test_a_seed_out_of_range_is_400_and_costs_no_capacity(client):
    for _ in range(3):
        response = client.post("/v1/completions", json={"prompt": "x", "seed": 2**64})
        assert response.status_code == 400 and response.json()["error"]["param"] == "seed"
    assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
