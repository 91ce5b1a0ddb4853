"""A model's generation_config.json: applied to the sampling fields a request leaves out, shown by
/v1/models; explicit values win; ``titans chat`` sends no temperature of its own."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from titans_core.generation_config import GenerationDefaults
from titans_core.model import SHIPPED

TITANS = str(Path(sys.executable).parent / "titans")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
HELLO = [{"role": "user", "content": "Hello!"}]


def model_with(tmp_path: Path, generation_config: dict) -> Path:
    """The shipped default's weights with a generation config of the test's own."""
    directory = tmp_path / "model"
    shutil.copytree(SHIPPED / "default", directory)
    (directory / "generation_config.json").write_text(json.dumps(generation_config))
    return directory


def replies(client: OpenAI, times: int, **fields) -> list[str]:
    return [
        client.chat.completions.create(model="default", messages=HELLO, max_tokens=24, **fields)
        .choices[0]
        .message.content
        for _ in range(times)
    ]


def test_a_greedy_generation_config_makes_requests_without_sampling_fields_greedy(tmp_path, start_server):
    server = start_server(None, "--model", str(model_with(tmp_path, {"do_sample": False, "top_k": 5})))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    listed = client.models.list().data
    assert [m.generation_config for m in listed] == [{"do_sample": False, "top_k": 5}] * len(listed)
    greedy = replies(client, 1, temperature=0)[0]
    assert replies(client, 3) == [greedy] * 3  # no field given: the model's greedy default
    # an explicit temperature wins over do_sample false: different seeds now give different replies
    sampled = {
        replies(client, 1, temperature=2.0, seed=seed, extra_body={"top_k": 0})[0] for seed in range(4)
    }
    assert len(sampled) > 1
    once = subprocess.run(
        [TITANS, "chat", "-m", "Hello!", "--max-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TITANS_BASE_URL": server.url},
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip() == greedy.strip()  # titans chat sent no temperature of its own


def test_the_models_temperature_and_top_p_apply_only_where_the_request_is_silent(tmp_path, start_server):
    config = {"do_sample": True, "temperature": 2.0, "top_p": 1.0, "top_k": 0}
    server = start_server(None, "--model", str(model_with(tmp_path, config)))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert client.models.list().data[0].generation_config == config
    hot = {replies(client, 1, seed=seed)[0] for seed in range(4)}
    assert len(hot) > 1  # the model's temperature 2: sampled
    cold = {replies(client, 1, seed=seed, temperature=0)[0] for seed in range(3)}
    assert len(cold) == 1  # the request's temperature 0 wins


def test_a_model_without_the_file_shows_no_defaults_and_samples_as_before(openai_client):
    assert openai_client.models.list().data[0].generation_config == {}


def test_a_malformed_generation_config_is_refused_with_its_path(tmp_path):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "generation_config.json").write_text('{"temperature": -1}')
    with pytest.raises(ValueError, match="generation_config.json: temperature"):
        GenerationDefaults.load(directory)
    assert GenerationDefaults.load(tmp_path).to_dict() == {}


WORDS = Path("/usr/share/dict/words")  # Debian's wamerican, the list the model card's figures used


@pytest.mark.skipif(not WORDS.is_file(), reason="needs a word list: apt-get install wamerican")
def test_the_shipped_default_answers_the_plain_sdk_call_in_real_words(start_server):
    """Pinned to the shipped ``default`` and its generation_config.json: the SDK's plain call (no
    sampling field; a seed only to make the run repeatable) answers everyday prompts in real words
    far more often than the temperature 1.0 it got before the file (model card: 73% vs 32% of 50)."""
    spec = importlib.util.spec_from_file_location("sampling_words", SCRIPTS / "sampling_words.py")
    words = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(words)
    vocabulary = words.load_words(WORDS)
    server = start_server(None, "--model", "default")
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert client.models.list().data[0].generation_config["temperature"] == 0.3
    prompts = words.PROMPTS[:12]
    texts = [
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": p}], seed=0)
        .choices[0]
        .message.content
        for p in prompts
    ]
    good = sum(words.in_words(text, vocabulary) for text in texts)
    assert good >= 8, list(zip(prompts, texts))
