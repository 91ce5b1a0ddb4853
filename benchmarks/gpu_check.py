"""The CUDA path: checked against the CPU float64 definition, then timed. One run, under a minute on an H100.

    PYTHONPATH=. python benchmarks/gpu_check.py [--out results.json]

Correctness: ``memory_update`` on CUDA (float64 to 1e-9 and float32 to 1e-4, relative to each
tensor's scale) against ``memory_update_reference`` on the CPU in float64, gradients included, and
``NeuralMemory`` token by token against one shot on CUDA. Timing (fp32 with TF32 off, so exact
fp32): ingestion and decode at batch 1 and batched, achieved FLOP/s against this card's fp32 matmul
rate measured in the same run, and the gate coefficients by segment products vs by the scan.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.coefficients_bench import compare  # noqa: E402
from benchmarks.memory_bench import flops_per_token  # noqa: E402
from titans_core.memory import NeuralMemory  # noqa: E402
from titans_core.ops import memory_update, memory_update_reference  # noqa: E402

CUDA = torch.device("cuda")


def random_inputs(batch, heads, length, dim, depth, momentum, decay, generator):
    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    shape = (batch, heads, length)
    q, k = (F.normalize(randn(*shape, dim), dim=-1) for _ in range(2))
    v = randn(*shape, dim)
    sizes = [dim] + [4 * dim] * (depth - 1) + [dim]
    weights = [randn(batch, heads, a, b) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    return [
        q,
        k,
        v,
        rand(*shape) * 0.02,
        rand(*shape) if momentum else None,
        rand(*shape) * 0.2 if decay else None,
        weights,
        [0.1 * randn(*w.shape) for w in weights] if momentum else None,
    ]


def to(args, device, dtype):
    move = lambda x: None if x is None else x.to(device, dtype)  # noqa: E731
    return [[move(x) for x in a] if isinstance(a, list) else move(a) for a in args]


def max_rel_error(fast, reference):
    """Largest error over y, weights and momentum, relative to each tensor's largest entry."""
    fast = [x for x in [fast[0], *fast[1], *(fast[2] or [])]]
    reference = [x.detach() for x in [reference[0], *reference[1], *(reference[2] or [])]]
    return max(((a.cpu().double() - b).abs().max() / b.abs().max()).item() for a, b in zip(fast, reference))


def gradient_error_on_cuda(args) -> float:
    """Largest relative error of the gradients on CUDA (float64) against the CPU definition's."""
    leaves_cpu = [
        x.requires_grad_() for a in args if a is not None for x in (a if isinstance(a, list) else [a])
    ]
    cuda_args = to(args, CUDA, torch.float64)
    leaves_cuda = [x for a in cuda_args if a is not None for x in (a if isinstance(a, list) else [a])]

    def grads(fn, call_args, leaves):
        y, weights, momentum = fn(*call_args, 16)
        projection = torch.Generator().manual_seed(5)
        loss = sum(
            (out * torch.randn(out.shape, generator=projection, dtype=torch.float64).to(out.device)).sum()
            for out in [y, *weights, *(momentum or [])]
        )
        return torch.autograd.grad(loss, leaves)

    fast = grads(memory_update, cuda_args, leaves_cuda)
    reference = grads(memory_update_reference, args, leaves_cpu)
    return max(((a.cpu() - b).abs().max() / b.abs().max()).item() for a, b in zip(fast, reference))


def check_correctness() -> dict:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for depth in (1, 2, 3):
        for chunk in (16, 64):
            for momentum, decay in ((True, True), (False, True), (True, False), (False, False)):
                args = random_inputs(2, 2, 150, 16, depth, momentum, decay, generator)
                reference = memory_update_reference(*args, chunk)
                f64 = memory_update(*to(args, CUDA, torch.float64), chunk)
                f32 = memory_update(*to(args, CUDA, torch.float32), chunk)
                rows.append(
                    {
                        "depth": depth,
                        "chunk": chunk,
                        "momentum": momentum,
                        "decay": decay,
                        "float64_rel_error": max_rel_error(f64, reference),
                        "float32_rel_error": max_rel_error(f32, reference),
                    }
                )
    gradient_error = max(
        gradient_error_on_cuda(random_inputs(1, 2, 40, 8, 2, momentum, decay, generator))
        for momentum, decay in ((True, True), (False, True), (True, False), (False, False))
    )
    torch.manual_seed(0)
    memory = NeuralMemory(64, heads=2, depth=2, chunk_size=16).to(CUDA)
    x = torch.randn(2, 100, 64, device=CUDA)
    with torch.inference_mode():
        y_once, _ = memory(x)
        state, outs = None, []
        for t in range(100):
            y, state = memory(x[:, t : t + 1], state)
            outs.append(y)
    streaming_error = (torch.cat(outs, 1) - y_once).abs().max().item()
    return {
        "op_vs_definition": rows,
        "worst_float64_rel_error": torch.tensor([r["float64_rel_error"] for r in rows]).max().item(),
        "worst_float32_rel_error": torch.tensor([r["float32_rel_error"] for r in rows]).max().item(),
        "gradient_float64_rel_error": gradient_error,
        "module_token_by_token_vs_one_shot_fp32_abs": streaming_error,
        # Written so that a NaN anywhere fails.
        "passed": all(r["float64_rel_error"] < 1e-9 and r["float32_rel_error"] < 1e-4 for r in rows)
        and gradient_error < 1e-9
        and streaming_error < 1e-4,
    }


def cuda_time(fn, repeats=5) -> float:
    """Median seconds of ``fn`` on the GPU (events around each call, after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def fp32_matmul_rate() -> float:
    a, b = torch.randn(8192, 8192, device=CUDA), torch.randn(8192, 8192, device=CUDA)
    return 2 * 8192**3 / cuda_time(lambda: a @ b)


def timings() -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    matmul_rate = fp32_matmul_rate()
    torch.manual_seed(0)
    memory = NeuralMemory(256, heads=1, depth=2, expansion=4, chunk_size=64).to(CUDA)
    flops = flops_per_token()
    out = {"fp32_matmul_flops": matmul_rate, "flops_per_token": flops, "ingest": [], "decode": []}
    with torch.inference_mode():
        for batch, length in ((1, 16384), (1, 65536), (32, 16384), (128, 4096)):
            x = torch.randn(batch, length, 256, device=CUDA)
            seconds = cuda_time(lambda x=x: memory(x), repeats=3)
            rate = batch * length / seconds
            out["ingest"].append(
                {
                    "batch": batch,
                    "tokens": length,
                    "tokens_per_s": rate,
                    "flops_fraction": rate * flops / matmul_rate,
                }
            )
        for batch in (1, 64):
            x = torch.randn(batch, 256 + 64, 256, device=CUDA)
            _, state = memory(x[:, :64])

            def decode(state=state, x=x):
                for t in range(64, 64 + 256):
                    _, state_next = memory(x[:, t : t + 1], state)
                    state = state_next

            seconds = cuda_time(decode, repeats=3)
            out["decode"].append({"batch": batch, "tokens_per_s": batch * 256 / seconds})
    out["coefficients"] = compare(CUDA, chunks=1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs one")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    result["correctness"] = check_correctness()
    print(json.dumps(result["correctness"], indent=1), flush=True)
    result["timing"] = timings()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    if not result["correctness"]["passed"]:
        sys.exit("CUDA results differ from the definition")


if __name__ == "__main__":
    main()
