"""What every benchmark here shares: the matmul yardstick, subprocess measurements, medians."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time


def matmul_rate(repeats: int = 20) -> float:
    """Median fp32 FLOP/s of a 1024 x 1024 x 1024 product on this machine, now."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * 1024**3 / statistics.median(times[3:])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def limit_address_space(gigabytes: float) -> None:
    """Cap this process, so a peer that blows up fails alone instead of taking the machine down."""
    limit = int(gigabytes * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def tensor_bytes(obj) -> int:
    """Bytes of every tensor reachable in nested tuples, lists, dicts and TensorDicts."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if hasattr(obj, "items"):
        return sum(tensor_bytes(v) for _, v in obj.items())
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def measure(script: str, args: list[str]) -> dict:
    """Run ``script --worker ARGS`` in a fresh process: its last stdout line is the JSON result."""
    done = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        reason = "out of memory" if "MemoryError" in done.stderr or "alloc" in done.stderr else "failed"
        last_line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        return {"error": f"{reason}: {last_line}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(measured: list[dict], **labels) -> dict:
    """One table row from repeated measurements: the median rate and every run, or the last error."""
    good = [m for m in measured if "error" not in m]
    if not good:
        return {**labels, "error": measured[-1]["error"]}
    row = {
        **labels,
        "tokens_per_s": statistics.median(m["tokens_per_s"] for m in good),
        "tokens_per_s_all": [m["tokens_per_s"] for m in good],
        "peak_rss_mb": max(m["peak_rss_mb"] for m in good),
        "runs": len(good),
    }
    for key in good[-1].keys() - row.keys() - {"tokens_per_s"}:
        row[key] = good[-1][key]
    return row


def value_range(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def publish(results: dict, out, report) -> None:
    """Write ``results`` as JSON to ``out`` (a Path, or None for none) and print ``report(results)``."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    print(report(results))
