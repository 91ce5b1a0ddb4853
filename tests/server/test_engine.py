"""The engine thread, driven directly: an ingestion measures each token as one forward would; a job whose
session's memory is poisoned fails alone, and the healthy jobs batched with it produce exactly what
they produce without it."""

from __future__ import annotations

import asyncio

import pytest
import torch

from titans_core import SamplingParams, TitansLM
from titans_server.engine import Engine, Job, NotFinite


@pytest.fixture(scope="module")
def model() -> TitansLM:
    return TitansLM.from_pretrained("tiny-random")


def poison(state) -> None:
    """Overwrite a session's memory weights with NaN, as a diverged or hostile state would hold."""
    with torch.inference_mode():  # the engine's states are inference tensors
        for layer in state.layers:
            for weights in layer.memory.weights:
                weights.fill_(float("nan"))


def poisoned_state(model: TitansLM):
    with torch.inference_mode():
        _, state = model(torch.tensor([[5, 6, 7]]))
    poison(state)
    return state


def chat_job() -> Job:
    return Job(None, [10, 11, 12], SamplingParams(max_new_tokens=12, temperature=0))


def run_turns(model: TitansLM, jobs: list[Job], poisoned: int | None = None) -> list[Job]:
    """The engine's loop turns on the calling thread; job ``poisoned`` is poisoned once every job
    has prefilled, so that it fails inside a batched decode step."""
    engine = Engine(model, max_batch_size=8, max_queue=16, piece_tokens=64, threads=1)
    engine._active, engine._count = list(jobs), len(jobs)
    while any(job.feeding for job in jobs):
        engine._turn()
    if poisoned is not None:
        poison(jobs[poisoned].state)
    while engine._active:
        engine._turn()
    return jobs


def test_a_job_poisoned_mid_batch_fails_alone_and_its_batch_completes(model):
    alone = run_turns(model, [chat_job() for _ in range(4)])
    mixed = run_turns(model, [chat_job() for _ in range(4)], poisoned=1)
    assert isinstance(mixed[1].error, NotFinite)
    healthy = [mixed[0], *mixed[2:]]
    assert all(job.error is None and job.finish_reason == "length" for job in healthy)
    assert [job.generated for job in healthy] == [alone[0].generated, *(job.generated for job in alone[2:])]


def test_a_poisoned_prompt_fails_alone(model):
    jobs = asyncio.run(run_jobs(model, [chat_job(), Job(poisoned_state(model), [10, 11], chat_job().params)]))
    assert jobs[0].error is None and len(jobs[0].generated) == 12
    assert isinstance(jobs[1].error, NotFinite) and jobs[1].generated == []


async def run_jobs(model: TitansLM, jobs: list[Job]) -> list[Job]:
    engine = Engine(model, max_batch_size=8, max_queue=16, piece_tokens=64, threads=1)
    engine.start()
    try:
        return await asyncio.gather(*(engine.run(job) for job in jobs))
    finally:
        assert engine.stop(timeout=60)


def test_a_poisoned_ingestion_fails_with_nothing_to_commit(model):
    (job,) = asyncio.run(run_jobs(model, [Job(poisoned_state(model), list(range(40)), None, measure=True)]))
    assert isinstance(job.error, NotFinite)


def test_an_ingestion_in_pieces_measures_each_token_as_one_forward_does(model):
    """Pieces of 64 tokens: each token's loss and write strength, in order, whatever the pieces."""
    document = torch.randint(0, model.tokenizer.vocab_size, (1, 150))
    pieces = []
    job = Job(None, document[0].tolist(), None, measure=True, on_progress=pieces.append)
    asyncio.run(run_jobs(model, [job]))
    with torch.inference_mode(), model.recording_writes() as writes:
        logits, _ = model(document)
    losses = torch.nn.functional.cross_entropy(logits[0, :-1], document[0, 1:], reduction="none")
    assert [piece.tokens_done for piece in pieces] == [64, 128, 150]
    measured_losses = [loss for piece in pieces for loss in piece.losses]
    assert measured_losses[0] is None and len(measured_losses) == 150
    assert torch.allclose(torch.tensor(measured_losses[1:]), losses, atol=1e-5)
    measured_writes = torch.tensor([w for piece in pieces for w in piece.writes])
    assert torch.allclose(measured_writes, writes.strengths()[0], atol=1e-6)
