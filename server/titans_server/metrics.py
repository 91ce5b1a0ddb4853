"""Prometheus metrics, ``titans:`` prefixed, in a registry per app (tests run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("titans:requests_running", "requests the engine is working on", registry=r)
        self.waiting = Gauge("titans:requests_waiting", "requests waiting for their session", registry=r)
        self.ttft = Histogram(
            "titans:time_to_first_token_seconds", "time to first token", buckets=LATENCY, registry=r
        )
        self.itl = Histogram(
            "titans:inter_token_latency_seconds", "between tokens", buckets=LATENCY, registry=r
        )
        self.prompt_tokens = Counter("titans:prompt_tokens", "prompt tokens fed", registry=r)
        self.generation_tokens = Counter("titans:generation_tokens", "tokens generated", registry=r)
        self.ingested_tokens = Counter("titans:ingested_tokens", "document tokens ingested", registry=r)
        self.batch_size = Histogram(
            "titans:batch_size",
            "sessions per model step",
            ["kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.step_seconds = Histogram(
            "titans:step_seconds", "model step time", ["kind"], buckets=LATENCY, registry=r
        )
        self.state_load_seconds = Histogram(
            "titans:state_load_seconds", "loading a state", buckets=LATENCY, registry=r
        )
        self.state_save_seconds = Histogram(
            "titans:state_save_seconds", "saving a state", buckets=LATENCY, registry=r
        )
        self.cache_hits = Gauge("titans:state_cache_hits", "state reads served from memory", registry=r)
        self.cpu_jobs = Gauge(
            "titans:cpu_jobs", "requests being tokenised or checked in the CPU pool", registry=r
        )
        self.refusals = Counter(
            "titans:refusals", "requests refused by a limit, by its error code", ["reason"], registry=r
        )

    def observe_step(self, kind: str, batch: int, seconds: float) -> None:
        self.batch_size.labels(kind).observe(batch)
        self.step_seconds.labels(kind).observe(seconds)

    def observe_generation(self, prompt_tokens: int, token_times: list[float], started: float) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(len(token_times))
        if token_times:
            self.ttft.observe(token_times[0] - started)
        for before, after in zip(token_times, token_times[1:]):
            self.itl.observe(after - before)
