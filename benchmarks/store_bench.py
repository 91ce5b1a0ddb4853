"""A session's state through the store, side by side with raw SET and GET of the same bytes.

    python benchmarks/store_bench.py --out benchmarks/results/store_cpu.json

The state is the default 6M MAC's (``TitansConfig()``) after 100 tokens, mid-chunk: the largest a
session holds at that shape. Per Redis (the embedded single node over its unix socket, and a 3 + 3
Redis Cluster on loopback from tests/redis_cluster.py), interleaved in one process, each repeated:

- ``raw``: ``SET`` then ``GET`` of the bytes under one key;
- ``store``: ``SessionStore.commit`` (the compare-and-set script and the index confirmation) then
  ``SessionStore.load`` (the metadata hash and the state), with the in-process cache off;
- ``store, WAIT 1`` (cluster only): the commit acknowledged once a replica holds it, against
  ``raw set + WAIT 1``, the same bytes SET and waited for on one connection of the key's node;
- ``codec``: ``to_bytes`` and ``from_bytes`` of the state, what a request adds around the store.

Medians of the per-repeat ratios to raw, and the medians of the times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from redis_cluster import start_cluster  # noqa: E402

from titans_core import TitansConfig, TitansLM  # noqa: E402
from titans_core.state import from_bytes, to_bytes  # noqa: E402
from titans_server.store import EmbeddedRedis, SessionMeta, SessionStore, connect  # noqa: E402


def session_state() -> tuple[bytes, TitansConfig]:
    torch.manual_seed(0)
    model = TitansLM(TitansConfig()).eval()
    with torch.inference_mode():
        _, state = model(torch.randint(0, 4096, (1, 100)))
    return to_bytes(state), model.config


async def measure(client, blob: bytes, repeats: int, wait_replicas: int) -> dict[str, list[float]]:
    plain = SessionStore(client, cache_bytes=0)
    waiting = SessionStore(client, cache_bytes=0, wait_replicas=1) if wait_replicas else None
    times: dict[str, list[float]] = {"raw set": [], "raw get": [], "store commit": [], "store load": []}
    if waiting:  # the raw counterpart: SET and WAIT on one connection of the key's node
        await client.initialize()
        node = client.get_node_from_key("bench:{raw}:state")
        direct = aioredis.Redis(host=node.host, port=node.port)
        times["raw set + WAIT 1"], times["store commit, WAIT 1"] = [], []
    versions = {"plain": -1, "waiting": -1}  # new sessions on every call
    ids = {name: f"bench-{name}-{os.urandom(4).hex()}" for name in versions}
    for _ in range(repeats):
        begin = time.perf_counter()
        await client.set("bench:{raw}:state", blob)
        times["raw set"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        assert len(await client.get("bench:{raw}:state")) == len(blob)
        times["raw get"].append(time.perf_counter() - begin)
        if waiting:
            begin = time.perf_counter()
            replicated = (
                await direct.pipeline(transaction=False)
                .set("bench:{raw}:state", blob)
                .wait(1, 1000)
                .execute()
            )
            times["raw set + WAIT 1"].append(time.perf_counter() - begin)
            assert replicated[-1] == 1
        for name, store in (("plain", plain), ("waiting", waiting)):
            if store is None:
                continue
            meta = SessionMeta(id=ids[name], model="bench")
            begin = time.perf_counter()
            meta = await store.commit("bench", meta, versions[name], blob)
            key = "store commit" if name == "plain" else "store commit, WAIT 1"
            times[key].append(time.perf_counter() - begin)
            versions[name] = meta.version
        begin = time.perf_counter()
        _, loaded = await plain.load("bench", ids["plain"])
        times["store load"].append(time.perf_counter() - begin)
        assert len(loaded) == len(blob)
    if waiting:
        await direct.aclose()
        await waiting.close()
    return times


def summary(times: dict[str, list[float]]) -> dict:
    rows = {name: {"median_ms": 1000 * statistics.median(values)} for name, values in times.items()}
    for name, raw in (
        ("store commit", "raw set"),
        ("store commit, WAIT 1", "raw set + WAIT 1"),
        ("store load", "raw get"),
    ):
        if name in times:
            ratios = [a / b for a, b in zip(times[name], times[raw])]
            rows[name]["ratio_to_raw_median"] = statistics.median(ratios)
    return rows


def codec(blob: bytes, config: TitansConfig, repeats: int) -> dict:
    encode, decode = [], []
    state = from_bytes(blob, config)
    for _ in range(repeats):
        begin = time.perf_counter()
        to_bytes(state)
        encode.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        from_bytes(blob, config)
        decode.append(time.perf_counter() - begin)
    return {
        "to_bytes_median_ms": 1000 * statistics.median(encode),
        "from_bytes_median_ms": 1000 * statistics.median(decode),
    }


def report(results: dict) -> str:
    lines = [f"state: {results['state_bytes']:,} bytes"]
    for where in ("single node", "cluster"):
        lines.append(where)
        for name, row in results[where].items():
            ratio = row.get("ratio_to_raw_median")
            lines.append(
                f"  {name:<22} {row['median_ms']:8.2f} ms" + (f"   {ratio:.2f}x raw" if ratio else "")
            )
    encode, decode = results["codec"]["to_bytes_median_ms"], results["codec"]["from_bytes_median_ms"]
    lines.append(f"codec: to_bytes {encode:.2f} ms, from_bytes {decode:.2f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    blob, config = session_state()
    results = {"state_bytes": len(blob), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="titans-store-bench-") as directory:
        embedded = EmbeddedRedis(Path(directory) / "single")
        try:
            results["single node"] = summary(asyncio.run(run(embedded.client(), blob, args.repeats, 0)))
        finally:
            embedded.stop()
        cluster = start_cluster(Path(directory) / "cluster")
        try:
            client = connect(cluster.url, cluster=True)
            results["cluster"] = summary(asyncio.run(run(client, blob, args.repeats, 1)))
        finally:
            cluster.stop()
    results["codec"] = codec(blob, config, args.repeats)
    print(report(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


async def run(client, blob: bytes, repeats: int, wait_replicas: int) -> dict[str, list[float]]:
    try:
        await measure(client, blob, 3, wait_replicas)  # warm-up: connections, first allocations
        return await measure(client, blob, repeats, wait_replicas)
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()
