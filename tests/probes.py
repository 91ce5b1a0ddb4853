"""Probes for tests that attack a real server: is it still answering, and how fast."""

from __future__ import annotations

import threading
import time

import httpx


def responsive(latencies: list[float]) -> bool:
    """/health within 100 ms, as the issue asks, for most probes, and 95% of them within 0.5 s: a
    shared machine deschedules the server now and then (a second, rarely), but a blocked event loop
    stalls every probe that meets it (9 s and more before issue 20's fixes)."""
    ordered = sorted(latencies)
    quick = sum(seconds < 0.1 for seconds in ordered)
    return quick >= 0.8 * len(ordered) and ordered[int(0.95 * (len(ordered) - 1))] < 0.5


class HealthProbe:
    """``/health``'s status and latency, probed from another thread while the test does something
    else. The probe only records: :meth:`check` asserts in the test's own thread (an assertion in
    the probe's thread would be a mere warning), on at least ``MIN_SAMPLES`` samples."""

    MIN_SAMPLES = 20

    def __init__(self, url: str):
        self.url, self.samples = url, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    @property
    def latencies(self) -> list[float]:
        return [seconds for _, seconds in self.samples]

    def _probe(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            http.get("/health")  # the connection is open before timing starts
            while not self._done.is_set() or len(self.samples) < self.MIN_SAMPLES:
                begin = time.perf_counter()
                try:
                    status = http.get("/health").status_code
                except httpx.HTTPError as error:
                    status = repr(error)
                self.samples.append((status, time.perf_counter() - begin))
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join(60)

    def check(self) -> None:
        """Every probe answered 200, and quickly enough (see :func:`responsive`)."""
        assert not self._thread.is_alive(), "the probe never collected its samples"
        assert len(self.samples) >= self.MIN_SAMPLES, self.samples
        assert all(status == 200 for status, _ in self.samples), self.samples
        assert responsive(self.latencies), self.latencies
