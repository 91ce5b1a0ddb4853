"""Data parallel: `torchrun --no-python --nproc-per-node 2 titans train ...` on gloo (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import tiny_cli_args, tiny_options, titans_command
from titans_core.train import train


def logged(out) -> list[dict]:
    """The training records of metrics.jsonl (one per logged step)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r]


def test_two_ranks_train_like_one_process_with_their_batches(corpus, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["--no-python", *titans_command(), *tiny_cli_args(corpus, out)]
    command += ["--batch-size", "1", "--steps", "4", "--lr", "0.003", "--min-lr", "0.0003"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # every rank ended with the same parameters (the loop compares their SHA-256 and says so)
    assert "parameters identical on all 2 ranks" in result.stdout
    assert "2 rank(s) on cpu" in result.stdout and "512 tokens per step" in result.stdout
    # rank 0 alone logs: one record per step
    records = logged(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]

    # one process with both ranks' samples in its batch takes the same steps
    single = train(tiny_options(corpus, tmp_path / "single", batch_size=2, steps=4, lr=3e-3, min_lr=3e-4))
    a = load_file(out / "final" / "model.safetensors")
    b = load_file(tmp_path / "single" / "final" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-4), name  # other data: ~1e-2
    losses = [r["loss"] for r in logged(tmp_path / "single")]
    assert [r["loss"] for r in records] == [pytest.approx(x, rel=1e-5) for x in losses]
    assert single.step == 4
