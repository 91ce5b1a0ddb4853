"""A CPU training step, this tree against an earlier commit's, side by side in one run.

    python benchmarks/train_step_bench.py --baseline 876f647 --out benchmarks/results/train_step_cpu.json
    python benchmarks/train_step_bench.py --also chunk_size=64   # + a maths change, reported apart

A step is what ``titans train`` does: ``WeightedLoss`` (forward over whole sequences from a fresh
state, the weighted cross-entropy), backward, gradient clipping, AdamW. Each side's step is its own
tree's code (the baseline's is ``git archive``-d into a temporary folder), run in a worker process
of its own with the same thread count, on the same tokens and the same initial weights. The
workers take turns: each round times ``--steps`` steps of every side in turn (the order alternating
between rounds), so a load on the shared machine falls on all of them alike. Reported: the median
step time over all rounds, tokens per second, the ratio to the baseline within each round (and
its median), the aten operators one profiled step launches, and the first step's loss on both
sides (equal up to rounding: the same maths). The default shape is the shipped default model's at
the batch and sequence length its CPU stages trained with (8 x 1,024).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The shipped default's shape (titans_core/pretrained/default/config.json), vocabulary included.
MODEL = {
    "variant": "MAC",
    "vocab_size": 4096,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
    "mem_heads": 1,
    "mem_layers": 1,
    "mem_expansion": 4,
    "chunk_size": 16,
    "segment_size": 64,
    "n_persistent": 4,
    "max_lr": 0.2,
    "max_surprise": 10.0,
    "window": 256,
}


def worker(root: str, model: dict, batch: int, length: int, threads: int) -> None:
    """Serve ``time N`` / ``profile`` / ``quit`` on stdin with ``root``'s code, one JSON line each."""
    sys.path.insert(0, root)
    import torch

    from titans_core.config import TitansConfig
    from titans_core.model import TitansLM
    from titans_core.train.loop import WeightedLoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = TitansLM(TitansConfig(**model))
    loss_module = WeightedLoss(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.1)
    tokens = torch.randint(
        0, model["vocab_size"], (batch, length + 1), generator=torch.Generator().manual_seed(1)
    )
    weights = torch.ones(batch, length)
    weights[:, -16:] = 30.0  # answers weigh more, as in the recall tasks

    def step() -> float:
        loss, _, _ = loss_module(tokens[:, :-1], tokens[:, 1:], weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    import titans_core

    began = time.perf_counter()
    first_loss = step()
    first = time.perf_counter() - began
    print(
        json.dumps({"ready": titans_core.__file__, "first_loss": first_loss, "first_step": first}), flush=True
    )
    for line in sys.stdin:
        command = line.split()
        if command[0] == "time":
            times = []
            for _ in range(int(command[1])):
                began = time.perf_counter()
                step()
                times.append(time.perf_counter() - began)
            print(json.dumps({"seconds": times}), flush=True)
        elif command[0] == "profile":
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                step()
            events = profile.key_averages()
            ops = sum(e.count for e in events if e.key.startswith("aten::"))
            top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
            shares = {e.key: round(e.self_cpu_time_total / 1e6, 4) for e in top}
            print(json.dumps({"aten_ops": ops, "top_self_seconds": shares}), flush=True)
        else:
            return


class Side:
    """One worker process: a name, its code's root, its model."""

    def __init__(self, name: str, root: Path, model: dict, args: argparse.Namespace):
        self.name = name
        spec = json.dumps([str(root), model, args.batch, args.seq_len, args.threads])
        env = dict(os.environ, PYTHONPATH=str(root))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.hello = self._read()
        self.seconds: list[float] = []

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()


def baseline_tree(revision: str, into: Path) -> Path:
    """``titans_core`` as it was at ``revision``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "titans_core"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="876f647", help="the commit whose step is compared")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side and round")
    parser.add_argument(
        "--also", action="append", default=[], help="FIELD=VALUE: this tree with a model change too"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(*json.loads(args.worker))
        return
    with tempfile.TemporaryDirectory() as scratch:
        old = baseline_tree(args.baseline, Path(scratch))
        sides = [Side(f"baseline {args.baseline}", old, MODEL, args), Side("this tree", ROOT, MODEL, args)]
        for change in args.also:
            field, value = change.split("=", 1)
            sides.append(Side(f"this tree, {change}", ROOT, dict(MODEL, **{field: json.loads(value)}), args))
        for side in sides:
            side.ask("time 1")  # a second warm-up step
        ratios = []
        for round_ in range(args.rounds):
            order = sides if round_ % 2 == 0 else sides[::-1]
            medians = {}
            for side in order:
                seconds = side.ask(f"time {args.steps}")["seconds"]
                side.seconds += seconds
                medians[side.name] = statistics.median(seconds)
            ratios.append({s.name: medians[sides[0].name] / medians[s.name] for s in sides[1:]})
            print(
                f"round {round_ + 1}: " + ", ".join(f"{n} {m:.3f} s" for n, m in medians.items()), flush=True
            )
        tokens = args.batch * args.seq_len
        rows = []
        for side in sides:
            profile = side.ask("profile")
            seconds = statistics.median(side.seconds)
            rows.append(
                {
                    "side": side.name,
                    "code": side.hello["ready"],
                    "first_loss": side.hello["first_loss"],
                    "first_step_seconds": side.hello["first_step"],
                    "seconds_per_step": seconds,
                    "tokens_per_second": tokens / seconds,
                    "speedup_median_of_rounds": None
                    if side is sides[0]
                    else statistics.median(r[side.name] for r in ratios),
                    **profile,
                }
            )
            side.close()
    for row in rows:
        print(
            f"{row['side']:<32} {row['tokens_per_second']:>8,.0f} tok/s  {row['seconds_per_step']:.3f} s/step"
            f"  {row['aten_ops']:>7,} aten ops  loss {row['first_loss']:.5f}"
            f"  first step {row['first_step_seconds']:.1f} s"
            + (f"  x{row['speedup_median_of_rounds']:.2f}" if row["speedup_median_of_rounds"] else "")
        )
    result = {
        "machine": f"{os.cpu_count()} cores, shared with other work (load alike for all sides: alternated)",
        "load_average_after": os.getloadavg(),
        "threads": args.threads,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "model": MODEL,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
