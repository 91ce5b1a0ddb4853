"""Train the shipped ``default`` model in a fixed wall-clock budget, on one accelerator.

    python scripts/train_default.py corpus/shakespeare --out runs/gpu --budget 420 --workers 14

Two ``titans train`` stages from a random init: conversations with memory at 1,024-token sequences,
then longer ones (4,096 tokens) for the passkey and facts far back. Each stage's step count is set
from its own measured speed (a short probe run first), so the cosine schedule ends with the budget
on whatever machine runs it. ``runs/gpu/plan.json`` records the measured speeds and the exact
options of each stage; ``runs/gpu/<stage>/options.json`` is the stage's ``titans train`` command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from titans_core.train import TrainOptions, train

TOKENIZER = str(Path(__file__).resolve().parents[1] / "titans_core/pretrained/default/tokenizer.json")
MODEL = {
    "variant": "MAC",
    "d_model": 192,
    "n_layers": 4,
    "n_heads": 4,
    "mem_heads": 2,
    "mem_layers": 1,
    "chunk_size": 16,
    "segment_size": 64,
    "n_persistent": 8,
    "max_lr": 0.2,
}
# (name, share of the budget, options); the conversation kinds are defined in titans_core.train.dialogue
STAGES = [
    (
        "short",
        0.6,
        dict(
            model=MODEL,
            seq_len=1024,
            batch_size=64,
            lr=2e-3,
            min_lr=2e-4,
            recall_fraction=0.85,
            recall_kinds=["chat", "chat", "chat", "document", "passkey-chat", "passkey"],
            answer_weight=30.0,
        ),
    ),
    (
        "long",
        0.4,
        dict(
            seq_len=4096,
            batch_size=32,
            lr=1e-3,
            min_lr=1e-4,
            recall_fraction=0.85,
            recall_kinds=["chat", "chat", "document", "passkey-chat", "passkey-chat", "passkey"],
            answer_weight=30.0,
        ),
    ),
]
PROBE_STEPS = 12  # the speed is taken over the last half: the first steps warm the allocator up


def seconds_per_step(data: list[str], out: Path, options: dict, workers: int, device: str) -> float:
    """Train a throwaway run of PROBE_STEPS steps; its measured time per step."""
    probe = out.with_name(out.name + "-probe")
    shutil.rmtree(probe, ignore_errors=True)
    train(
        TrainOptions(
            data=data,
            out=str(probe),
            tokenizer=TOKENIZER,
            steps=PROBE_STEPS,
            warmup=1,
            eval_every=0,
            eval_sequences=0,
            eval_recall=0,
            save_every=0,
            log_every=PROBE_STEPS // 2,
            workers=workers,
            threads=4,
            device=device,
            progress="lines",
            **options,
        )
    )
    records = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines()]
    timed = [r["seconds_per_step"] for r in records if "seconds_per_step" in r]
    shutil.rmtree(probe)
    return timed[-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="seconds of training, both stages")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plan, init = [], None
    for name, share, options in STAGES:
        out = args.out / name
        staged = dict(options, init=init) if init else dict(options)
        began = time.perf_counter()
        per_step = seconds_per_step(args.data, out, staged, args.workers, args.device)
        left = share * args.budget - (time.perf_counter() - began)
        steps = max(10, int(left / per_step))
        plan.append({"stage": name, "seconds_per_step": per_step, "steps": steps})
        (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
        print(f"{name}: {per_step:.3f} s/step measured -> {steps} steps", flush=True)
        result = train(
            TrainOptions(
                data=args.data,
                out=str(out),
                tokenizer=TOKENIZER,
                steps=steps,
                warmup=max(1, min(100, steps // 20)),
                eval_every=0,
                eval_sequences=4,
                eval_recall=16,
                eval_distances=[1024],
                save_every=0,
                save_minutes=1.5,
                keep=1,
                log_every=10,
                workers=args.workers,
                threads=4,
                device=args.device,
                progress="lines",
                **staged,
            )
        )
        plan[-1].update(seconds=result.seconds, tokens=result.tokens, eval=result.metrics)
        (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
        init = str(result.export)


if __name__ == "__main__":
    main()
