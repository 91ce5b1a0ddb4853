"""The recall tasks' format: the answer is the target after the question, the question follows the
fact after exactly N filler tokens, and the training layout is what the server sees."""

from __future__ import annotations

import random

import pytest
import torch

from titans_core.tokenizer import Tokenizer
from titans_core.train import passkey_document, passkey_messages, train_tokenizer
from titans_core.train.corpus import read_texts
from titans_core.train.data import Batch, SampleSource, TokenCorpus, shard
from titans_core.train.recall import PASSKEY_QUESTION, RecallLayout, make_task, recall_sample


@pytest.fixture(scope="module")
def bpe(corpus) -> Tokenizer:
    return train_tokenizer([d.text for d in read_texts([corpus])], vocab_size=400)


@pytest.fixture(scope="module")
def stream(corpus, bpe) -> torch.Tensor:
    return TokenCorpus.of(read_texts([corpus]), bpe, 0.1).train


def find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    raise AssertionError(f"{needle} not found")


@pytest.mark.parametrize("distance", [0, 10, 300])
def test_passkey_sample_layout(bpe, stream, distance):
    source = SampleSource(stream, bpe, seq_len=512, seed=1, answer_weight=7.0)
    rng = random.Random(distance)
    sample = source.recall(rng, "passkey", distance)
    tokens, weights = sample.tokens, sample.weights
    assert len(tokens) == 513 and len(weights) == 512 and sample.distance == distance
    question = bpe.encode_chat(passkey_messages())
    asked = find(tokens, question)
    ((start, end),) = sample.answers
    answer = tokens[start + 1 : end + 1]  # the targets of the answer span
    passkey = bpe.decode(answer[:-1])
    assert len(passkey) == 5 and passkey.isdigit() and answer[-1] == bpe.end_of_turn_id
    assert start == asked + len(question) - 1  # the first answer token is predicted after "\n"
    statement = bpe.encode(f"The passkey is {passkey}. Remember it. {passkey} is the passkey.\n")
    stated = find(tokens, statement)
    assert asked - (stated + len(statement)) == distance  # exactly N filler tokens in between
    assert weights[start:end] == [7.0] * len(answer)
    stated_targets = range(stated - 1, stated - 1 + len(statement))  # token i is target i - 1
    first = find(statement, answer[:-1])  # the stated passkey, twice
    again = find(statement[first + 1 :], answer[:-1]) + first + 1
    repeat = range(again, again + len(answer) - 1)  # copying the second statement of it is trained
    expected = [7.0 if j in repeat else 0.0 for j, i in enumerate(stated_targets) if i >= 0]
    assert first < again and [weights[i] for i in stated_targets if i >= 0] == expected
    assert set(weights[: max(0, stated - 1)]) <= {1.0} and set(weights[end:]) == {1.0}
    assert tokens[end + 1 : end + 3] == [*bpe.encode("\n"), bpe.end_of_text_id]


def test_facts_sample_asks_one_of_the_stated_facts(bpe, stream):
    source = SampleSource(stream, bpe, seq_len=256, seed=3)
    for index in range(20):
        rng = random.Random(index)
        sample = source.recall(rng, "facts", 100)
        text = bpe.decode(sample.tokens)
        ((start, end),) = sample.answers
        value = bpe.decode(sample.tokens[start + 1 : end])
        asked = text.split("What is the code of the ")[1].split(" door?")[0]
        assert f"The code of the {asked} door is {value}.\n" in text
        assert 2 <= text.count("The code of the ") <= 4


def test_training_layout_is_what_the_server_sees(bpe):
    """Ingesting passkey_document(...) then chatting PASSKEY_QUESTION gives the training tokens."""
    filler = "Ham.\nThe king and the queen speak of love and death, 1603.\nHor.\nGood night"
    task = make_task(random.Random(0), "passkey")
    layout = RecallLayout.of(task, bpe)
    sample = recall_sample(layout, bpe.encode(filler))
    served = bpe.encode(passkey_document(task.answer, filler)) + bpe.encode_chat(passkey_messages())
    assert sample.tokens == served + bpe.encode(task.answer) + [bpe.end_of_turn_id]
    assert passkey_messages() == [{"role": "user", "content": PASSKEY_QUESTION}]


def test_samples_are_reproducible_and_mixed(bpe, stream):
    source = SampleSource(stream, bpe, seq_len=256, seed=5, recall_fraction=0.5, min_distance=4)
    again = SampleSource(stream, bpe, seq_len=256, seed=5, recall_fraction=0.5, min_distance=4)
    other = SampleSource(stream, bpe, seq_len=256, seed=6, recall_fraction=0.5, min_distance=4)
    samples = [source[i] for i in range(200)]
    assert [s.tokens for s in samples] == [again[i].tokens for i in range(200)]
    assert [s.tokens for s in samples] != [other[i].tokens for i in range(200)]
    kinds = [s.kind for s in samples]
    assert 60 < kinds.count("lm") < 140 and "passkey" in kinds and "facts" in kinds
    distances = [s.distance for s in samples if s.kind != "lm"]
    assert min(distances) >= 4 and max(distances) <= 256
    assert min(distances) < 16 and max(distances) > 64  # log-uniform: short and long ones
    for s in samples:
        assert len(s.tokens) == 257 and len(s.weights) == 256
        assert (not s.answers) == (s.kind == "lm")
    batch = Batch.of(samples[:8])
    assert batch.inputs.shape == batch.targets.shape == batch.weights.shape == (8, 256)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    assert batch.answers.sum() == sum(end - start for s in samples[:8] for start, end in s.answers)


def test_only_language_modelling_or_only_recall(bpe, stream):
    lm = SampleSource(stream, bpe, seq_len=128, seed=0, recall_fraction=0.0)
    recall = SampleSource(stream, bpe, seq_len=128, seed=0, recall_fraction=1.0, kinds=("passkey",))
    assert {lm[i].kind for i in range(50)} == {"lm"}
    assert {recall[i].kind for i in range(50)} == {"passkey"}


def test_a_distance_that_does_not_fit_is_refused(bpe, stream):
    source = SampleSource(stream, bpe, seq_len=100, seed=0, kinds=("passkey",))
    with pytest.raises(ValueError, match="does not fit"):
        source.recall(random.Random(0), "passkey", 64)
    with pytest.raises(ValueError, match="too short for facts tasks"):
        SampleSource(stream, bpe, seq_len=100, seed=0)  # refused at once, not at some step


def test_shards_cover_the_global_batch_whatever_the_world_size():
    for step in range(3):
        one = shard(step, 0, 1, 4, 0, 1)
        two = shard(step, 0, 1, 2, 0, 2) + shard(step, 0, 1, 2, 1, 2)
        four = [i for rank in range(4) for i in shard(step, 0, 1, 1, rank, 4)]
        assert one == two == four == list(range(4 * step, 4 * step + 4))
    accumulated = [i for micro in range(2) for i in shard(1, micro, 2, 2, 0, 1)]
    assert accumulated == list(range(4, 8))
