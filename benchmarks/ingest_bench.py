"""What measuring an ingestion costs: the engine's prefill with and without each token's write strength.

    python benchmarks/ingest_bench.py --out benchmarks/results/ingest_cpu.json

The playground's plot needs, per token, the model's next-token loss and the memory's write strength
(``theta_t |u_t|``). The write strength comes from factors the memory update computes anyway: a few
reductions per chunk. Three ways to feed one document in the engine's pieces (2,048 tokens) run
interleaved in one process, so a busy machine slows them alike:

- ``state only``: no logits (the cheapest ingestion there is);
- ``loss``: every position's logits and losses (what ingestion computed before the write strength);
- ``loss + writes``: that, with the write strength recorded (what ingestion computes now).

The figure that matters is ``loss + writes`` over ``loss``: the price of the write strength.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from harness import publish

from titans_core import TitansConfig, TitansLM

PIECE = 2048


def feed(model: TitansLM, document: torch.Tensor, way: str) -> None:
    state = None
    for piece in document.split(PIECE, dim=1):
        if way == "state only":
            _, state = model(piece, state, logits="none")
            continue
        if way == "loss + writes":
            with model.recording_writes() as writes:
                logits, state = model(piece, state)
            writes.strengths()[0].tolist()
        else:
            logits, state = model(piece, state)
        torch.nn.functional.cross_entropy(logits[0, :-1], piece[0, 1:], reduction="none").tolist()


def load(name: str) -> TitansLM:
    """``6m``: the default configuration (``TitansConfig()``, ~6M parameters, random weights)."""
    if name == "6m":
        torch.manual_seed(0)
        return TitansLM(TitansConfig()).eval()
    return TitansLM.from_pretrained(name).eval()


def run(model_name: str, tokens: int, repeats: int) -> dict:
    model = load(model_name)
    document = torch.randint(0, model.tokenizer.vocab_size, (1, tokens))
    ways = ["state only", "loss", "loss + writes"]
    seconds = {way: [] for way in ways}
    with torch.inference_mode():
        feed(model, document[:, :PIECE], "loss + writes")  # warm-up
        for _ in range(repeats):
            for way in ways:
                begin = time.perf_counter()
                feed(model, document, way)
                seconds[way].append(time.perf_counter() - begin)
    rates = {way: tokens / statistics.median(times) for way, times in seconds.items()}
    ratios = [w / plain for w, plain in zip(seconds["loss + writes"], seconds["loss"])]
    return {
        "model": model_name,
        "tokens": tokens,
        "repeats": repeats,
        "tokens_per_s": rates,
        "writes_over_loss_time_median": statistics.median(ratios),
        "writes_over_loss_time_all": ratios,
    }


def report(results: dict) -> str:
    lines = [f"{'model':<12} {'state only':>12} {'loss':>12} {'loss + writes':>14} {'time ratio':>11}"]
    for row in results["rows"]:
        rate = row["tokens_per_s"]
        lines.append(
            f"{row['model']:<12} {rate['state only']:>10,.0f}/s {rate['loss']:>10,.0f}/s "
            f"{rate['loss + writes']:>12,.0f}/s {row['writes_over_loss_time_median']:>10.3f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default", "6m"])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(name, args.tokens, args.repeats) for name in args.models]
    publish({"threads": args.threads, "rows": rows}, args.out, report)


if __name__ == "__main__":
    main()
