"""Neural-memory ingestion and streaming: ours vs titans-pytorch, side by side in one run.

    python benchmarks/memory_bench.py --out benchmarks/results/memory_cpu.json   # full, ~15 min
    python benchmarks/memory_bench.py --quick                                     # 1K, 4K, once

Shape: one head, memory MLP 256 -> 1024 -> 256, momentum and decay on, chunk 64, batch 1, fp32,
2 threads. Every measurement runs in a fresh subprocess, so peak RSS is that measurement's own.
The FLOP count per token is the closed form's matmuls plus the module's input and output
projections (see ``flops_per_token``); the matmul rate is a 1024x1024 fp32 product measured in the
same run, interleaved with the measurements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from harness import (
    limit_address_space,
    matmul_rate,
    measure,
    peak_rss_mb,
    publish,
    summary,
    tensor_bytes,
    value_range,
)

DIM, HIDDEN, CHUNK = 256, 1024, 64
ONE_SHOT_MAX = 65536  # longer inputs (ours at 1M) are generated and fed in pieces,
STREAM_PIECE = 4096  # ... of this many tokens, as the server streams a long document in


def flops_per_token(dim: int = DIM, hidden: int = HIDDEN, chunk: int = CHUNK) -> int:
    """Multiply-adds x 2 per token of our exact computation at this shape (depth 2, momentum on).

    Per chunk of b tokens: key forward and backward at the chunk-start weights (3 b d h), the read
    with weights and momentum (4 b d h) and its attention-like terms (2 b^2 (d + h)), the commit of
    weights and momentum (4 b d h), and the gate products (b^3). Per token add the projections:
    in to q, k, v and 3 gates (d x (3d + 3)), and out (d x d).
    """
    memory = 11 * dim * hidden + 2 * chunk * (dim + hidden) + chunk * chunk
    projections = dim * (3 * dim + 3) + dim * dim
    return 2 * (memory + projections)


def _build(impl: str):
    import torch

    torch.manual_seed(0)
    if impl == "ours":
        from titans_core.memory import NeuralMemory

        return NeuralMemory(DIM, heads=1, depth=2, expansion=HIDDEN // DIM, chunk_size=CHUNK)
    from titans_pytorch import NeuralMemory

    return NeuralMemory(dim=DIM, chunk_size=CHUNK)


def _step(impl: str, memory, x, state):
    if impl == "ours":
        return memory(x, state)
    return memory(x, state=state)


def worker(impl: str, task: str, tokens: int) -> dict:
    """One measurement in this process: ingestion of ``tokens`` tokens, or token-by-token streaming."""
    import torch

    memory = _build(impl).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        _step(impl, memory, torch.randn(1, 4 * CHUNK, DIM, generator=generator), None)  # one-time costs
        if task == "ingest":
            if tokens > ONE_SHOT_MAX:
                pieces = [STREAM_PIECE] * (tokens // STREAM_PIECE) + [tokens % STREAM_PIECE] * bool(
                    tokens % STREAM_PIECE
                )
            else:
                pieces = [tokens]
            state, elapsed = None, 0.0
            for size in pieces:
                x = torch.randn(1, size, DIM, generator=generator)
                start = time.perf_counter()
                _, state = _step(impl, memory, x, state)
                elapsed += time.perf_counter() - start
            state_bytes = state.nbytes() if impl == "ours" else tensor_bytes(state)
            return {
                "tokens_per_s": tokens / elapsed,
                "peak_rss_mb": peak_rss_mb(),
                "state_bytes": state_bytes,
            }
        x = torch.randn(1, tokens + CHUNK, DIM, generator=generator)
        _, state = _step(impl, memory, x[:, :CHUNK], None)  # warm up, and start mid-stream
        start = time.perf_counter()
        for t in range(CHUNK, CHUNK + tokens):
            _, state = _step(impl, memory, x[:, t : t + 1], state)
        return {"tokens_per_s": tokens / (time.perf_counter() - start), "peak_rss_mb": peak_rss_mb()}


def _measure(impl: str, task: str, tokens: int, memory_limit_gb: float) -> dict:
    return measure(__file__, [impl, task, str(tokens), "--limit-gb", str(memory_limit_gb)])


def run(
    lengths: list[int], long_lengths: list[int], stream_tokens: int, repeats: int, limit_gb: float
) -> dict:
    flops = flops_per_token()
    results = {"flops_per_token": flops, "matmul_flops": [], "ingest": [], "stream": []}
    for tokens in lengths + long_lengths:
        runs = {"ours": [], "titans-pytorch": []}
        impls = ["ours"] if tokens in long_lengths else ["ours", "titans-pytorch"]
        for _ in range(repeats if tokens <= 16384 else 1):
            for impl in impls:
                results["matmul_flops"].append(matmul_rate())
                runs[impl].append(_measure(impl, "ingest", tokens, limit_gb))
                print(f"ingest {tokens:>8} {impl:15} {runs[impl][-1]}", file=sys.stderr)
        for impl, measured in runs.items():
            if measured:
                results["ingest"].append(summary(measured, impl=impl, tokens=tokens))
    for impl in ("ours", "titans-pytorch"):
        measured = [_measure(impl, "stream", stream_tokens, limit_gb) for _ in range(repeats)]
        print(f"stream {impl:15} {measured}", file=sys.stderr)
        results["stream"].append(summary(measured, impl=impl, tokens=stream_tokens))
    results["matmul_flops_median"] = statistics.median(results["matmul_flops"])
    return results


def report(results: dict) -> str:
    """A markdown summary: throughput, FLOP/s against the matmul rate, RSS, state, ratios."""
    flops, rate = results["flops_per_token"], results["matmul_flops_median"]
    lines = [
        f"FLOP per token (ours, exact): {flops / 1e6:.2f} M; "
        f"fp32 1024^3 matmul rate: {rate / 1e9:.0f} GFLOP/s",
        "",
        "| tokens | impl | tokens/s: median (runs' range) | GFLOP/s (% of matmul) | peak RSS MB | state MB "
        "| ours / peer |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["impl"], r["tokens"]): r for r in results["ingest"]}
    for r in results["ingest"]:
        if "error" in r:
            lines.append(f"| {r['tokens']} | {r['impl']} | {r['error']} | | | | |")
            continue
        achieved = r["tokens_per_s"] * flops
        peer = by_key.get(("titans-pytorch", r["tokens"]))
        ratio = ""
        if r["impl"] == "ours" and peer and "error" not in peer:
            ratio = f"{r['tokens_per_s'] / peer['tokens_per_s']:.2f}x"
        flop_cell = f"{achieved / 1e9:.1f} ({achieved / rate:.0%})" if r["impl"] == "ours" else ""
        rate_cell = f"{r['tokens_per_s']:,.0f} ({value_range(r['tokens_per_s_all'])})"
        lines.append(
            f"| {r['tokens']} | {r['impl']} | {rate_cell} | {flop_cell} "
            f"| {r['peak_rss_mb']:,.0f} | {r['state_bytes'] / 1e6:.2f} | {ratio} |"
        )
    lines.append("")
    for r in results["stream"]:
        if "error" in r:
            lines.append(f"token-by-token streaming, {r['impl']}: {r['error']}")
            continue
        lines.append(
            f"token-by-token streaming, {r['impl']}: {r['tokens_per_s']:,.0f} tokens/s "
            f"(runs: {value_range(r['tokens_per_s_all'])})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "TASK", "TOKENS"), help=argparse.SUPPRESS)
    parser.add_argument("--limit-gb", type=float, default=16.0, help="address-space cap per measurement")
    parser.add_argument("--quick", action="store_true", help="1K and 4K only, one repeat")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement up to 16K tokens")
    parser.add_argument(
        "--out", type=Path, help="write the results as JSON here (the full run: results/memory_cpu.json)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)  # the measurements' thread count, for the matmul rate measured here too
    if args.worker:
        limit_address_space(args.limit_gb)
        impl, task, tokens = args.worker
        print(json.dumps(worker(impl, task, int(tokens))))
        return
    if args.quick:
        results = run([1024, 4096], [], stream_tokens=128, repeats=1, limit_gb=args.limit_gb)
    else:
        results = run(
            [1024, 4096, 16384, 65536],
            [1_048_576],
            stream_tokens=512,
            repeats=args.repeats,
            limit_gb=args.limit_gb,
        )
    publish(results, args.out, report)


if __name__ == "__main__":
    main()
