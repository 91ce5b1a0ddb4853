"""The training loop on a tiny model: it learns, resumes exactly, and exports a loadable model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import tiny_options
from titans_core import TitansLM, Tokenizer, generate
from titans_core.train import TrainOptions, train
from titans_core.train.checkpoint import checkpoint_dirs
from titans_core.train.optim import learning_rate


def logged(out, key="loss"):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in records if key in r]


def test_loss_decreases(corpus, tmp_path):
    options = tiny_options(corpus, tmp_path / "run", steps=40, lr=1e-2, min_lr=1e-3, log_every=5)
    result = train(options)
    losses = logged(tmp_path / "run")
    assert result.finished and result.step == 40 and len(losses) == 8
    assert losses[-1] < losses[0] - 1.0, losses  # byte-level text from ~ln(264) = 5.6 down
    assert all(math.isfinite(x) for x in losses)
    assert result.metrics["val_loss"] < losses[0]
    assert result.tokens == 40 * 2 * 256


def test_resume_gives_exactly_the_uninterrupted_run(corpus, tmp_path):
    whole = train(tiny_options(corpus, tmp_path / "whole"))
    first = train(tiny_options(corpus, tmp_path / "split", stop_after=4))
    assert not first.finished and first.step == 4 and first.export is None
    assert [p.name for p in checkpoint_dirs(tmp_path / "split")] == ["step-000004"]
    second = train(tiny_options(corpus, tmp_path / "split", resume=True))
    assert second.finished and second.step == 6 and second.tokens == whole.tokens
    a = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    b = load_file(tmp_path / "split" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.digest == second.digest
    assert logged(tmp_path / "whole") == logged(tmp_path / "split")  # the same loss at every step
    assert whole.metrics == second.metrics


def test_batches_built_by_worker_processes_train_exactly_the_same_run(corpus, tmp_path):
    """--workers only moves where batches are built: the samples, and so every weight, are the same,
    also across a resume (the workers start at the resumed step)."""
    whole = train(tiny_options(corpus, tmp_path / "whole"))
    train(tiny_options(corpus, tmp_path / "split", stop_after=4, workers=2))
    second = train(tiny_options(corpus, tmp_path / "split", resume=True, workers=3))
    assert second.finished and second.digest == whole.digest
    assert logged(tmp_path / "whole") == logged(tmp_path / "split")


def test_a_resumed_run_keeps_the_optimizer_state(corpus, tmp_path):
    """Dropping the optimizer state on resume would change the result: the test above can fail."""
    whole = train(tiny_options(corpus, tmp_path / "whole"))
    train(tiny_options(corpus, tmp_path / "split", stop_after=3))
    trainer = tmp_path / "split" / "checkpoints" / "step-000003" / "trainer.pt"
    state = torch.load(trainer, weights_only=True)
    state["optimizer"]["state"] = {}
    torch.save(state, trainer)
    second = train(tiny_options(corpus, tmp_path / "split", resume=True))
    assert second.digest != whole.digest


def test_export_loads_with_its_tokenizer(corpus, tmp_path):
    result = train(tiny_options(corpus, tmp_path / "run", tokenizer=None, vocab_size=300, steps=3))
    model = TitansLM.from_pretrained(result.export).eval()
    assert model.config.vocab_size == 320  # the tokenizer's 300 rounded up to a multiple of 64
    assert model.config.d_model == 32 and model.config.segment_size == 32
    tokenizer = Tokenizer.from_file(result.export / "tokenizer.json")
    assert tokenizer.vocab_size == model.tokenizer.vocab_size == 300
    assert (result.export / "tokenizer.json").read_text() == (tmp_path / "run" / "tokenizer.json").read_text()
    checkpoint = TitansLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step-000003").eval()
    prompt = tokenizer.encode_chat([{"role": "user", "content": "Who is there?"}])
    with torch.no_grad():
        a, _ = model(torch.tensor([prompt]))
        b, _ = checkpoint(torch.tensor([prompt]))
    assert torch.equal(a, b)
    reply = list(generate(model, prompt, max_new_tokens=5, temperature=0))
    assert len(reply) >= 1
    info = json.loads((result.export / "training.json").read_text())
    assert info["step"] == 3 and info["tokens"] == result.tokens and info["config"] == model.config.to_dict()


def test_a_stage_starts_from_the_last_stages_model(corpus, tmp_path):
    """``init``: a curriculum's longer-sequence stage continues the shorter stage's export, with its
    config and tokenizer unless told otherwise."""
    short = train(tiny_options(corpus, tmp_path / "short", steps=3))
    start = load_file(short.export / "model.safetensors")
    init = dict(init=str(short.export), model={}, tokenizer=None)  # config and tokenizer: the init's
    long = tiny_options(corpus, tmp_path / "long", steps=1, seq_len=512, lr=0.0, **init)
    long = train(long)  # lr 0 at its one step (warmup from 0): the weights are the init's, unchanged
    after = load_file(long.export / "model.safetensors")
    assert all(torch.equal(start[k], after[k]) for k in start)
    assert TitansLM.from_pretrained(long.export).config == TitansLM.from_pretrained(short.export).config
    tokenizer = (long.export / "tokenizer.json").read_text()
    assert tokenizer == (short.export / "tokenizer.json").read_text()
    stopped = train(tiny_options(corpus, tmp_path / "resumed", steps=2, stop_after=1, **init))
    resumed = train(tiny_options(corpus, tmp_path / "resumed", steps=2, resume=True, **init))
    assert not stopped.finished and resumed.finished and resumed.step == 2  # the init's config again
    fresh = train(tiny_options(corpus, tmp_path / "fresh", steps=1, lr=0.0))
    random_init = load_file(fresh.export / "model.safetensors")["embed.weight"]
    assert not torch.equal(random_init, start["embed.weight"])
    other = tiny_options(corpus, tmp_path / "other", steps=1, init=str(short.export), model={"d_model": 64})
    with pytest.raises(ValueError, match="d_model: 32 there, 64 here"):
        train(other)
    assert not (tmp_path / "other").exists()  # the refused run left nothing to --resume or clean up


def test_checkpoints_keep_the_newest(corpus, tmp_path):
    train(tiny_options(corpus, tmp_path / "run", steps=5, save_every=1, keep=2))
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-000004", "step-000005"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))


def test_run_folder_rules(corpus, tmp_path):
    train(tiny_options(corpus, tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_options(corpus, tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match="lr: 0.003 in the run, 0.001 now"):
        train(tiny_options(corpus, tmp_path / "run", steps=2, lr=1e-3, resume=True))
    # runtime options may change; a finished run resumed does nothing more
    info = (tmp_path / "run" / "final" / "training.json").read_text()
    assert json.loads(info)["eval"]["val_loss"] > 0
    again = train(tiny_options(corpus, tmp_path / "run", steps=2, resume=True, log_every=7))
    assert again.finished and again.step == 2 and again.metrics == json.loads(info)["eval"]
    assert (tmp_path / "run" / "final" / "training.json").read_text() == info


def test_learning_rate_schedule(tmp_path):
    options = TrainOptions(data=[str(tmp_path)], out=str(tmp_path), steps=100, warmup=10, lr=1.0, min_lr=0.1)
    rates = [learning_rate(step, options) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and all(a > b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(steps=0), "steps"),
        (dict(model={"d_modell": 3}), "unknown model field"),
        (dict(recall_kinds=["essay"]), "recall_kinds"),
        (dict(max_distance=3, min_distance=10), "max_distance"),
        (dict(device="tpu"), "device"),
        (dict(workers=-1), "workers"),
    ],
)
def test_bad_options_are_refused(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        TrainOptions(data=[str(tmp_path)], out=str(tmp_path), **bad)
