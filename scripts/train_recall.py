"""Train a recall model in curriculum stages on the CPU, resumably (issue 25, items 2-3).

    nohup python scripts/train_recall.py corpus/shakespeare --out runs/recall --until copy \\
        > runs/recall.log 2>&1 &

Values are spelled in bytes (``--tokenizer byte``): a held-out name is then made of the same
pieces as every trained one, and the 264-way output layer costs a sixteenth of the 4,096-way one.
The stages, each from the last one's export, each ending when its gate opens (teacher-forced
whole-answer accuracy over three log windows in a row) or at its step cap, whichever comes first:

- ``copy``: dense drills asked within the attention span (distance <= 40 tokens): copying first;
- ``cross``: the same drills asked 64-256 tokens later: across one to four segments;
- ``far``: drills and conversations asked >= 256 tokens later, in 2,048-token sequences (most
  distances >= 512).

About 15% of the sequences stay plain text. Kill it at any time (SIGTERM saves a checkpoint) and
run the same command again: a finished stage is skipped, an interrupted one resumes. ``--until``
names the last stage this invocation runs (default: all).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from titans_core.train.stages import Stage, run_stages

MODEL = {  # the shipped default's shape; the vocabulary follows the byte tokenizer
    "variant": "MAC",
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
    "mem_heads": 1,
    "mem_layers": 1,
    "chunk_size": 16,
    "segment_size": 64,
    "n_persistent": 4,
    "max_lr": 0.2,
}
COMMON = dict(
    tokenizer="byte",
    model=MODEL,
    recall_fraction=0.85,
    answer_weight=30.0,
    gate_lr_scale=10.0,
    gate_reports=3,
    eval_every=0,
    eval_sequences=4,
    eval_recall=16,
    eval_distances=[64, 512],
    save_minutes=5.0,
    keep=2,
    log_every=20,
    threads=1,
    device="cpu",
    progress="lines",
)
STAGES = [
    Stage(
        "copy",
        dict(
            recall_kinds=["drill"],
            min_distance=0,
            max_distance=40,
            seq_len=512,
            batch_size=16,
            steps=3000,
            lr=3e-3,
            min_lr=3e-4,
            warmup=100,
            gate_accuracy=0.9,
        ),
    ),
    Stage(
        "cross",
        dict(
            recall_kinds=["drill"],
            min_distance=64,
            max_distance=256,
            seq_len=1024,
            batch_size=8,
            steps=3000,
            lr=2e-3,
            min_lr=2e-4,
            warmup=50,
            gate_accuracy=0.8,
        ),
    ),
    Stage(
        "far",
        dict(
            recall_kinds=["drill", "drill", "chat", "document", "passkey-chat"],
            min_distance=256,
            seq_len=2048,  # a chat with a fact 256+ bytes back does not fit 1,024 bytes
            batch_size=4,
            steps=4000,
            lr=1.5e-3,
            min_lr=1.5e-4,
            warmup=50,
            gate_accuracy=0.6,
        ),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--until", choices=[s.name for s in STAGES], help="the last stage to run")
    args = parser.parse_args()
    names = [s.name for s in STAGES]
    last = names.index(args.until) if args.until else len(STAGES) - 1
    for record in run_stages(STAGES[: last + 1], args.data, args.out, COMMON):
        print(record, flush=True)


if __name__ == "__main__":
    main()
