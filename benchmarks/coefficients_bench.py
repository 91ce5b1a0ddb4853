"""Gate coefficients of a chunk: segment products (what the op uses) vs the associative scan.

    python benchmarks/coefficients_bench.py

The coefficients ``g`` (each token's gradient weight in the weights read at each row) and ``h``
(the start momentum's contribution) are linear recurrences down the rows, so the log-depth scan
can compute them; the op computes them as products of masked cumprods and one small matmul. Both
are checked against each other, then timed (median of repeats) for one chunk and for many at once.
"""

from __future__ import annotations

import statistics
import time

import torch

from titans_core.ops import linear_scan
from titans_core.ops.chunked_memory import _LocalCoefficients


def coefficients_by_scan(theta: torch.Tensor, eta: torch.Tensor, alpha: torch.Tensor):
    """``g`` and ``f`` of :class:`_LocalCoefficients`, by two scans down the rows."""
    # scaled[t, j] = eta_t scaled[t-1, j] + theta_t [t == j]; g[t, :] = (1 - alpha_t) g[t-1, :] + scaled[t, :]
    scaled = linear_scan(eta.unsqueeze(-2), torch.diag_embed(theta).mT).mT
    carry = torch.cumprod(eta, dim=-1)
    gh = linear_scan((1 - alpha).unsqueeze(-2), torch.cat([scaled, carry.unsqueeze(-1)], -1).mT).mT
    return gh[..., :-1], gh[..., -1]


def _seconds(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(device: torch.device, chunks: int, chunk_size: int = 64, repeats: int = 30) -> dict:
    """Seconds for each method on ``chunks`` chunks' gates at once, after checking they agree."""
    gates = torch.rand(3, chunks, chunk_size, device=device, dtype=torch.float64)
    theta, eta, alpha = gates[0] * 0.1, gates[1], gates[2]
    reference = _LocalCoefficients.of(theta, eta, alpha)
    g, h = coefficients_by_scan(theta, eta, alpha)
    torch.testing.assert_close(g, reference.g)
    torch.testing.assert_close(h, reference.f)
    theta, eta, alpha = (x.float() for x in (theta, eta, alpha))
    return {
        "chunks": chunks,
        "segment_products_s": _seconds(lambda: _LocalCoefficients.of(theta, eta, alpha), device, repeats),
        "associative_scan_s": _seconds(lambda: coefficients_by_scan(theta, eta, alpha), device, repeats),
    }


if __name__ == "__main__":
    torch.set_num_threads(2)
    for chunks in (1, 256):
        result = compare(torch.device("cpu"), chunks)
        print(
            f"CPU, {chunks} chunk(s) of 64: segment products {result['segment_products_s'] * 1e6:,.0f} us, "
            f"scan {result['associative_scan_s'] * 1e6:,.0f} us"
        )
