"""Conversation samples: token for token what a server session is fed, answers where the facts are
asked, no loss on values a model cannot predict, and no held-out value ever trained on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import titans_core
from titans_core.tokenizer import Tokenizer
from titans_core.train import dialogue
from titans_core.train.data import SampleSource

TOKENIZER = Path(titans_core.__file__).parent / "pretrained" / "default" / "tokenizer.json"
TEXT = "It was the best of times, it was the worst of times.\nHe said no more, and went away.\n" * 400


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(TOKENIZER)


@pytest.fixture(scope="module")
def source(tokenizer) -> SampleSource:
    tokens = torch.tensor(tokenizer.encode(TEXT))
    return SampleSource(
        tokens, tokenizer, 1024, seed=3, recall_fraction=1.0, answer_weight=30.0, kinds=dialogue.KINDS
    )


def test_turns_are_laid_out_as_the_server_feeds_a_session(tokenizer, source):
    stream = dialogue._Stream()
    source.conversations.user(stream, "My name is Ada.", ("Ada",))
    source.conversations.assistant(stream, "Nice to meet you, Ada.", "Ada")
    # the server: the new message by encode_chat (which opens the reply), the generated reply, then
    # <|end|> and a newline after it
    served = tokenizer.encode_chat([{"role": "user", "content": "My name is Ada."}])
    served += tokenizer.encode("Nice to meet you, Ada.") + [tokenizer.end_of_turn_id, *tokenizer.encode("\n")]
    assert stream.tokens == served
    ada = tokenizer.encode(" Ada")
    at = [i for i in range(len(served)) if served[i : i + len(ada)] == ada]
    # weights here are per token (the sample shifts them by one): the stated name carries no loss,
    # its copy in the acknowledgement (within attention) the answer weight
    assert [stream.weights[i] for i in range(at[0], at[0] + len(ada))] == [0.0] * len(ada)
    assert [stream.weights[i] for i in range(at[1], at[1] + len(ada))] == [30.0] * len(ada)
    assert not stream.answers  # an acknowledgement is not a recall answer


@pytest.mark.parametrize("kind", dialogue.KINDS)
def test_every_answer_is_the_value_asked_for(tokenizer, source, kind):
    for index in range(12):
        sample = source.conversations.sample(random.Random(f"{kind}{index}"), kind, 1024)
        assert len(sample.tokens) == 1025 and len(sample.weights) == 1024 and sample.kind == kind
        assert sample.answers, "every sample asks something within its length"
        for start, end in sample.answers:
            value = tokenizer.decode(sample.tokens[start + 1 : end + 1]).strip()
            assert value and value in tokenizer.decode(sample.tokens[: start + 1])  # told before
            assert sample.weights[start:end] == [30.0] * (end - start)
            before = tokenizer.decode(sample.tokens[max(0, start - 8) : start + 1])
            assert before.rstrip().endswith(("is", "in")), before  # "Your name is", "You live in"


def test_a_chat_asks_its_facts_far_beyond_the_attention_span(source):
    distances = [source.conversations.sample(random.Random(i), "chat", 1024).distance for i in range(60)]
    assert min(distances) < 64 and max(distances) > 512


def test_samples_are_reproducible(tokenizer, source):
    def built(seed: int) -> SampleSource:
        tokens = torch.tensor(tokenizer.encode(TEXT))
        return SampleSource(
            tokens, tokenizer, 1024, seed=seed, recall_fraction=1.0, answer_weight=30.0, kinds=dialogue.KINDS
        )

    again, other = built(3), built(4)  # ``source`` is seed 3, built apart
    assert [again[i].tokens for i in range(10)] == [source[i].tokens for i in range(10)]
    assert [other[i].tokens for i in range(10)] != [source[i].tokens for i in range(10)]


@pytest.mark.parametrize("kind", dialogue.FACT_KINDS)
def test_training_never_draws_a_held_out_value_and_evaluation_only_those(kind):
    rng = random.Random(kind)
    trained = [dialogue.draw_value(rng, kind) for _ in range(300)]
    held = [dialogue.draw_value(rng, kind, evaluation=True) for _ in range(100)]
    assert not any(dialogue.held_out(kind, v) for v in trained)
    assert all(dialogue.held_out(kind, v) for v in held)
    assert len(set(held)) > 50  # many different values, from many locales


def test_the_held_out_split_is_an_eighth_of_the_values():
    rng = random.Random(5)
    values = [str(rng.randrange(10**5, 10**6)) for _ in range(4000)]
    share = sum(dialogue.held_out("number", v) for v in values) / len(values)
    assert 0.1 < share < 0.15  # 1/8, as HELD_OUT_EIGHTHS says


def test_the_training_source_asks_only_training_values(tokenizer, source):
    """Read back from what training is fed: each supervised answer decoded to its value (passkeys,
    random digits in training and evaluation alike, left aside)."""
    answers = []
    for index in range(150):
        sample = source[index]
        targets = sample.tokens[1:]
        for start, end in sample.answers:
            if not tokenizer.decode(targets[max(0, start - 6) : start]).endswith("passkey is "):
                answers.append(tokenizer.decode(targets[start:end]).strip())
    numbers = [a for a in answers if a.isdigit()]
    words = [a for a in answers if not a.isdigit()]
    assert len(numbers) > 50 and len(words) > 50
    assert not any(dialogue.held_out("number", n) for n in numbers)
    # a name or city: held out as neither kind (one string both held-out kinds is 1 in 64)
    assert not any(dialogue.held_out("name", w) and dialogue.held_out("city", w) for w in words)
    assert sum(dialogue.held_out("name", w) or dialogue.held_out("city", w) for w in words) < len(words) / 3


def test_held_out_names_include_ones_of_several_tokens(tokenizer):
    rng = random.Random(0)
    names = [dialogue.draw_value(rng, "name", evaluation=True) for _ in range(50)]
    assert sum(len(tokenizer.encode(" " + n)) >= 3 for n in names) > 25
