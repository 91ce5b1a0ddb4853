"""A primary of the Redis Cluster killed under load: what the servers answer, how fast they recover,
and whether any acknowledged commit was lost.

Two servers share a 3 + 3 cluster (tests/redis_cluster.py); clients commit to many sessions, each
session through one server, as fast as they are answered. After a few seconds the primary of the
first shard gets SIGKILL; its replica takes over; a few seconds later the killed node is started
again, as a supervisor would, and rejoins as the new primary's replica. With
``--redis-wait-replicas 1`` the shard can acknowledge nothing between the two: its one node has no
replica. The run counts per session the commits acknowledged (200), those that answered 503
``commit_uncertain`` (landed or not: the client cannot know), and every other answer; afterwards
each session's version is compared with its acknowledged commits.

    python tests/failover_run.py --out benchmarks/results/failover_cpu.json    # with and without WAIT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_cluster import Cluster, start_cluster  # noqa: E402
from servers import Server  # noqa: E402

from titans_server.auth import OPEN_TENANT  # noqa: E402
from titans_server.store import SessionStore  # noqa: E402


@dataclass
class Tally:
    """What one session's client saw."""

    acked: int = 0
    uncertain: int = 0
    answers: Counter = field(default_factory=Counter)  # "503 store_unavailable", ...
    without_retry_after: int = 0  # 503s that did not say when to come back
    ok_times: list[float] = field(default_factory=list)


async def drive(http: httpx.AsyncClient, url: str, session: str, tally: Tally, stop: asyncio.Event) -> None:
    body = {"prompt": "x", "session_id": session, "max_tokens": 1, "temperature": 0}
    while not stop.is_set():
        try:
            answer = await http.post(url + "/v1/completions", json=body)
        except httpx.HTTPError as error:
            tally.answers[type(error).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        if answer.status_code == 200:
            tally.acked += 1
            tally.ok_times.append(time.monotonic())
            continue
        code = answer.json()["error"]["code"]
        tally.answers[f"{answer.status_code} {code}"] += 1
        if code == "commit_uncertain":
            tally.uncertain += 1
        if answer.status_code == 503 and "retry-after" not in answer.headers:
            tally.without_retry_after += 1
        await asyncio.sleep(0.05)


async def failover_under_load(
    cluster: Cluster,
    urls: list[str],
    sessions: int = 24,
    before: float = 3.0,
    down: float = 3.0,
    deadline: float = 60.0,
) -> dict:
    """Load; SIGKILL of ``cluster.primaries[0]``; its replica's promotion; ``down`` seconds later the
    killed node restarted, as a supervisor would (it rejoins as the new primary's replica); then the
    tally (see the module)."""
    names = [f"load-{i}" for i in range(sessions)]
    victim = cluster.primaries[0]
    on_victim = {n for n in names if cluster.owner_of(SessionStore._key(OPEN_TENANT, n) + ":meta") is victim}
    tallies = {name: Tally() for name in names}
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=120) as http:
        tasks = [
            asyncio.ensure_future(drive(http, urls[i % len(urls)], name, tallies[name], stop))
            for i, name in enumerate(names)
        ]
        await asyncio.sleep(before)
        killed = time.monotonic()
        cluster.kill(victim)
        promoted = await asyncio.to_thread(cluster.wait_promoted, cluster.replicas[0])
        await asyncio.sleep(down)  # the shard's new primary has no replica meanwhile
        restarted = time.monotonic()
        rejoined = await asyncio.to_thread(cluster.restart, victim)
        give_up = rejoined + deadline
        while time.monotonic() < give_up and not all(
            any(t > rejoined for t in tallies[n].ok_times) for n in on_victim
        ):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a little more load on the recovered shard
        stop.set()
        await asyncio.gather(*tasks)
        versions = {}
        for name in names:
            versions[name] = (await http.get(f"{urls[0]}/v1/sessions/{name}")).json()["version"]
    first_ok = {n: min((t for t in tallies[n].ok_times if t > promoted), default=None) for n in on_victim}
    recovered = [t - promoted for t in first_ok.values() if t is not None]
    answers = sum((t.answers for t in tallies.values()), Counter())
    return {
        "sessions": sessions,
        "sessions_on_the_killed_primary": len(on_victim),
        "promotion_seconds_after_kill": promoted - killed,
        "killed_node_restarted_after_promotion_seconds": restarted - promoted,
        "replica_back_after_promotion_seconds": rejoined - promoted,
        "first_commit_on_the_shard_after_promotion_seconds": min(recovered) if recovered else None,
        "every_session_of_the_shard_committed_after_promotion_seconds": (
            max(recovered) if len(recovered) == len(on_victim) else None
        ),
        "median_session_recovery_seconds": statistics.median(recovered) if recovered else None,
        "acknowledged": sum(t.acked for t in tallies.values()),
        "commit_uncertain": sum(t.uncertain for t in tallies.values()),
        "answers_besides_200": dict(answers),
        "refusals_without_retry_after": sum(t.without_retry_after for t in tallies.values()),
        # per session: version - acknowledged lies in [0, uncertain] when nothing acknowledged was lost
        "lost_acknowledged": sum(max(0, tallies[n].acked - versions[n]) for n in names),
        "sessions_losing_acknowledged": sum(tallies[n].acked > versions[n] for n in names),
        "landed_of_uncertain": sum(max(0, versions[n] - tallies[n].acked) for n in names),
        "versions_beyond_acknowledged_and_uncertain": sum(
            versions[n] > tallies[n].acked + tallies[n].uncertain for n in names
        ),
    }


def run(directory: Path, wait_replicas: int) -> dict:
    cluster = start_cluster(directory / "cluster")
    servers: list[Server] = []
    try:
        flags = ["--redis-url", cluster.url, "--redis-cluster", "true"]
        flags += ["--redis-wait-replicas", str(wait_replicas)]
        for i in range(2):
            (directory / f"server{i}").mkdir(parents=True, exist_ok=True)
            servers.append(Server(directory / f"server{i}" / "data", *flags).start())
        report = asyncio.run(failover_under_load(cluster, [s.url for s in servers]))
        return {"redis_wait_replicas": wait_replicas, **report}
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    reports = []
    for wait_replicas in (1, 0):
        with tempfile.TemporaryDirectory(prefix="titans-failover-") as directory:
            reports.append(run(Path(directory), wait_replicas))
            print(json.dumps(reports[-1], indent=2))
    if args.out:
        args.out.write_text(json.dumps({"runs": reports}, indent=2) + "\n")


if __name__ == "__main__":
    main()
