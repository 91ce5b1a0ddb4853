"""One training step of the GPU-trained default's shape, by batch size and sequence length: where
the time goes.

    python benchmarks/train_step_bench.py --out benchmarks/results/train_step_h200.json

A step is what ``titans train`` does: forward over whole sequences from a fresh state, the weighted
loss, backward, AdamW. For each shape: the median wall time of 5 steps after 2 warm-ups, tokens
per second, and from one profiled step the number of kernels (CUDA) or operators (CPU) launched
and the time the GPU was busy. A step whose wall time barely grows with the batch and far exceeds
the GPU's busy time is bound by launching kernels, not by arithmetic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.train_default import MODEL  # noqa: E402
from titans_core.config import TitansConfig  # noqa: E402
from titans_core.model import TitansLM  # noqa: E402


def step(model: TitansLM, optimizer: torch.optim.Optimizer, tokens: torch.Tensor) -> None:
    logits, _ = model(tokens[:, :-1], logits="all")
    loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(model, optimizer, batch: int, length: int, device: torch.device) -> dict:
    tokens = torch.randint(0, model.config.vocab_size, (batch, length + 1), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    times = []
    for _ in range(7):
        sync()
        began = time.perf_counter()
        step(model, optimizer, tokens)
        sync()
        times.append(time.perf_counter() - began)
    activity = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activity.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activity) as profile:
        step(model, optimizer, tokens)
        sync()
    events = profile.key_averages()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        launched = sum(e.count for e in kernels)
        busy = sum(e.self_device_time_total for e in kernels) / 1e6
    else:
        launched = sum(e.count for e in events if e.key.startswith("aten::"))
        busy = None
    seconds = statistics.median(times[2:])
    return {
        "batch": batch,
        "seq_len": length,
        "seconds_per_step": seconds,
        "tokens_per_second": batch * length / seconds,
        "launched": launched,
        "device_busy_seconds": busy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default="16x1024,64x1024,256x1024,64x256,64x4096")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    model = TitansLM(TitansConfig(**MODEL)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []
    for shape in args.shapes.split(","):
        batch, length = (int(x) for x in shape.split("x"))
        rows.append(measure(model, optimizer, batch, length, device))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": MODEL,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
