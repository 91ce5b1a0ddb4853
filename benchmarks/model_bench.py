"""Whole-model ingestion and decode: our MAC vs titans-pytorch's MAC and a full-attention transformer.

    python benchmarks/model_bench.py --out benchmarks/results/model_cpu.json   # full, ~25 min
    python benchmarks/model_bench.py --quick                                    # 4K only, once

Ours is ``TitansLM(TitansConfig())``: MAC, d_model 256, 4 layers, 4 heads, memory depth 2 with 4
heads of 64 (hidden 256), chunk 64, segment 256, 16 persistent tokens, vocabulary 4096. The peer is
``titans_pytorch.MemoryAsContextTransformer`` at the closest shape (same width, depth, heads,
segment, persistent tokens and memory MLP per head, memory chunk 64, one residual stream). The
transformer is the same width and depth with causal full attention (RoPE, SDPA). Batch 1, fp32, 2
threads; every measurement in a fresh subprocess, so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from harness import limit_address_space, matmul_rate, measure, peak_rss_mb, publish, summary, value_range

VOCAB, PROMPT = 4096, 256  # decode starts from a state that has consumed PROMPT tokens


def flops_per_token(config) -> int:
    """Multiply-adds x 2 per ingested token of our MAC (no logits), averaged over a segment.

    Per layer, with d = d_model, H memory heads of e features, hidden h = 4e, chunk b, segment S and
    P persistent tokens: projections ``20 d^2`` (queries, keys and values of tokens and retrieved
    tokens, retrieval queries, attention output, memory input, memory output twice, feed-forward
    ``8 d^2``) plus the gates ``3 d H``; the retrieval read ``2 H e h``; attention over
    ``P + S + 1`` keys on average, ``2 d (P + S + 1)``; and the memory's closed form per head,
    ``11 e h + 2 b (e + h) + b^2`` (memory_bench.py derives it).
    """
    d, heads = config.d_model, config.mem_heads
    e = d // heads
    h = config.mem_expansion * e
    b, segment, persistent = config.chunk_size, config.segment_size, config.n_persistent
    per_layer = (
        20 * d * d
        + 3 * d * heads
        + 2 * heads * e * h
        + 2 * d * (persistent + segment + 1)
        + heads * (11 * e * h + 2 * b * (e + h) + b * b)
    )
    return 2 * config.n_layers * per_layer


def _peer():
    from titans_pytorch import MemoryAsContextTransformer, MemoryMLP

    return MemoryAsContextTransformer(
        num_tokens=VOCAB,
        dim=256,
        depth=4,
        segment_len=256,
        heads=4,
        dim_head=64,
        num_persist_mem_tokens=16,
        num_longterm_mem_tokens=16,
        neural_memory_segment_len=64,
        num_residual_streams=1,
        neural_memory_model=MemoryMLP(dim=64, depth=2, expansion_factor=4),
        neural_memory_kwargs=dict(heads=4, dim_head=64),
    )


def _transformer():
    """A plain pre-norm causal transformer of our width and depth: the quadratic baseline."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from titans_core.attention import rotary_table, rotate

    class Layer(nn.Module):
        def __init__(self, d: int, heads: int):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.RMSNorm(d), nn.RMSNorm(d)
            self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.up, self.down = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x):
            qkv = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
            table = rotary_table(torch.arange(x.shape[1]), qkv.shape[-1], 10000.0, x)
            y = F.scaled_dot_product_attention(
                rotate(qkv[0], table), rotate(qkv[1], table), qkv[2], is_causal=True
            )
            x = x + self.out(y.transpose(1, 2).flatten(2))
            return x + self.down(F.silu(self.up(self.norm2(x))))

    class FullAttentionLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 256)
            self.layers = nn.ModuleList(Layer(256, 4) for _ in range(4))
            self.norm = nn.RMSNorm(256)

        def forward(self, tokens):
            x = self.embed(tokens)
            for layer in self.layers:
                x = layer(x)
            return self.norm(x)

    torch.manual_seed(0)
    return FullAttentionLM()


def _ours():
    import torch

    from titans_core import TitansConfig, TitansLM

    torch.manual_seed(0)
    return TitansLM(TitansConfig())


def worker(impl: str, task: str, tokens: int) -> dict:
    """One measurement: ``ingest`` (a forward over ``tokens``), or ``decode`` / ``decode8`` (``tokens``
    new tokens for 1 / 8 sessions; tokens/s counts every session's tokens)."""
    import torch

    model = {"ours": _ours, "titans-pytorch": _peer, "transformer": _transformer}[impl]().eval()
    generator = torch.Generator().manual_seed(1)
    parameters = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        warm = torch.randint(0, VOCAB, (1, 512), generator=generator)
        model(warm) if impl != "ours" else model(warm, logits="none")
        if task == "ingest":
            x = torch.randint(0, VOCAB, (1, tokens), generator=generator)
            start = time.perf_counter()
            if impl == "ours":
                _, state = model(x, logits="none")
            else:
                model(x)
            elapsed = time.perf_counter() - start
            result = {"tokens_per_s": tokens / elapsed, "seconds": elapsed}
            if impl == "ours":
                from titans_core.state import to_bytes

                result["state_bytes"] = len(to_bytes(state))
            return result | {"peak_rss_mb": peak_rss_mb(), "parameters": parameters}
        batch = 8 if task == "decode8" else 1
        prompt = torch.randint(0, VOCAB, (batch, PROMPT), generator=generator)
        if impl == "ours" and batch == 1:
            from titans_core import generate

            steps = generate(model, prompt[0], max_new_tokens=tokens, top_p=0.9, seed=0)
            next(steps)  # the prefill and the first token
            start = time.perf_counter()
            produced = 1 + sum(1 for _ in steps)
            rate = (produced - 1) / (time.perf_counter() - start)
        elif impl == "ours":
            # Sessions at one position stack into one batch: every step is one batched forward.
            from titans_core import SamplingParams
            from titans_core.generation import sample

            params = SamplingParams(top_p=0.9)
            logits, state = model(prompt, logits="last")
            start = time.perf_counter()
            for _ in range(tokens):
                token = sample(logits[:, -1], params, generator)
                logits, state = model(token.unsqueeze(-1), state, logits="last")
            rate = batch * tokens / (time.perf_counter() - start)
        else:
            # sample() always prefills: the difference of two lengths is the decode time alone.
            times = []
            for new in (tokens // 4, tokens):
                start = time.perf_counter()
                model.sample(prompt, PROMPT + new, use_cache=True, show_progress=False)
                times.append(time.perf_counter() - start)
            rate = batch * (tokens - tokens // 4) / (times[1] - times[0])
        return {"tokens_per_s": rate, "peak_rss_mb": peak_rss_mb(), "parameters": parameters}


def _run(impl: str, task: str, tokens: int, limit_gb: float) -> dict:
    result = measure(__file__, [impl, task, str(tokens), "--limit-gb", str(limit_gb)])
    print(f"{task} {tokens:>7} {impl:15} {result}", file=sys.stderr)
    return result


def run(plan: list[tuple[str, str, int, int]], limit_gb: float) -> dict:
    """``plan``: (impl, task, tokens, repeats); repeats of one size alternate between the impls."""
    from titans_core import TitansConfig

    results = {"flops_per_token": flops_per_token(TitansConfig()), "matmul_flops": [], "rows": []}
    keys = sorted({(task, tokens) for _, task, tokens, _ in plan}, key=lambda k: (k[0], k[1]))
    for task, tokens in keys:
        entries = [(impl, repeats) for impl, t, n, repeats in plan if (t, n) == (task, tokens)]
        runs: dict[str, list[dict]] = {impl: [] for impl, _ in entries}
        for round_ in range(max(repeats for _, repeats in entries)):
            for impl, repeats in entries:
                if round_ < repeats:
                    results["matmul_flops"].append(matmul_rate())
                    runs[impl].append(_run(impl, task, tokens, limit_gb))
        for impl, measured in runs.items():
            results["rows"].append(summary(measured, impl=impl, task=task, tokens=tokens))
    results["matmul_flops_median"] = statistics.median(results["matmul_flops"])
    return results


def crossover(rows: list[dict]) -> float | None:
    """Where the transformer's fitted time ``a T + c T^2`` passes ours (flat tokens/s): tokens."""
    ours = [r for r in rows if r["impl"] == "ours" and r["task"] == "ingest" and "error" not in r]
    full = [r for r in rows if r["impl"] == "transformer" and "error" not in r]
    if not ours or len(full) < 2:
        return None
    import numpy as np

    lengths = np.array([r["tokens"] for r in full], dtype=float)
    seconds = lengths / np.array([r["tokens_per_s"] for r in full])
    (a, c), *_ = np.linalg.lstsq(np.stack([lengths, lengths**2], axis=1), seconds, rcond=None)
    per_token = 1 / statistics.median(r["tokens_per_s"] for r in ours)
    return (per_token - a) / c if c > 0 and per_token > a else None


def report(results: dict) -> str:
    flops, rate = results["flops_per_token"], results["matmul_flops_median"]
    lines = [
        f"FLOP per token (ours, exact, no logits): {flops / 1e6:.2f} M; "
        f"fp32 1024^3 matmul rate: {rate / 1e9:.0f} GFLOP/s",
        "",
        "| task | tokens | impl | tokens/s: median (runs' range) | GFLOP/s (% of matmul) | peak RSS MB "
        "| state MB | ours / impl |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["impl"], r["task"], r["tokens"]): r for r in results["rows"]}
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['tokens']:,} | {r['impl']} | {r['error']} | | | | |")
            continue
        ours = by_key.get(("ours", r["task"], r["tokens"]))
        ratio = ""
        if r["impl"] != "ours" and ours and "error" not in ours:
            ratio = f"{ours['tokens_per_s'] / r['tokens_per_s']:.2f}x"
        achieved = r["tokens_per_s"] * flops
        flop_cell = f"{achieved / 1e9:.1f} ({achieved / rate:.0%})" if r["impl"] == "ours" else ""
        if r["task"].startswith("decode"):
            flop_cell = ""
        state = f"{r['state_bytes'] / 1e6:.2f}" if "state_bytes" in r else ""
        lines.append(
            f"| {r['task']} | {r['tokens']:,} | {r['impl']} | {r['tokens_per_s']:,.0f} "
            f"({value_range(r['tokens_per_s_all'])}) | {flop_cell} | {r['peak_rss_mb']:,.0f} "
            f"| {state} | {ratio} |"
        )
    point = crossover(results["rows"])
    if point is not None:
        lines += [
            "",
            f"ours overtakes the full-attention transformer from about {point:,.0f} tokens (fitted)",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "TASK", "TOKENS"), help=argparse.SUPPRESS)
    parser.add_argument("--limit-gb", type=float, default=16.0, help="address-space cap per measurement")
    parser.add_argument("--quick", action="store_true", help="4K ingestion and 32-token decode, once")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement up to 16K tokens")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    if args.worker:
        limit_address_space(args.limit_gb)
        impl, task, tokens = args.worker
        print(json.dumps(worker(impl, task, int(tokens))))
        return
    n = args.repeats
    if args.quick:
        plan = [(impl, "ingest", 4096, 1) for impl in ("ours", "titans-pytorch", "transformer")]
        plan += [(impl, "decode", 32, 1) for impl in ("ours", "titans-pytorch")]
    else:
        plan = [("ours", "ingest", t, n if t <= 16384 else 1) for t in (4096, 16384, 65536, 262144)]
        plan += [("titans-pytorch", "ingest", t, n) for t in (4096, 16384)]
        plan += [("transformer", "ingest", t, n if t <= 16384 else 1) for t in (4096, 16384, 65536)]
        plan += [(impl, "decode", 128, n) for impl in ("ours", "titans-pytorch")]
        plan += [(impl, "decode8", 64, n) for impl in ("ours", "titans-pytorch")]
    results = run(plan, args.limit_gb)
    publish(results, args.out, report)


if __name__ == "__main__":
    main()
