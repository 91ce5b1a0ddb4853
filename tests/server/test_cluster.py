"""Sessions on a real Redis Cluster (tests/redis_cluster.py: 3 primaries, 3 replicas on loopback):
every flow works, sessions spread over the primaries, racing servers keep every commit, and a
primary killed under load loses no acknowledged commit."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from titans_client import NotFoundError, TitansClient
from titans_server.auth import hash_key, new_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from failover_run import failover_under_load  # noqa: E402
from redis_cluster import start_cluster  # noqa: E402

GREEDY = {"temperature": 0, "max_tokens": 2}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster of the test's own: it kills nodes."""
    running = start_cluster(tmp_path / "cluster")
    yield running
    running.stop()


def on(cluster, *flags: str) -> list[str]:
    return ["--redis-url", cluster.url, "--redis-cluster", "true", *flags]


def test_every_flow_works_with_sessions_on_every_primary(cluster, start_server, tmp_path):
    keys = {"acme": new_key(), "globex": new_key()}
    (tmp_path / "keys").write_text("".join(f"{t} {hash_key(k)}\n" for t, k in keys.items()))
    server = start_server(tmp_path / "data", *on(cluster, "--api-keys-file", str(tmp_path / "keys")))
    acme = TitansClient(server.url, api_key=keys["acme"])
    globex = TitansClient(server.url, api_key=keys["globex"])
    names = [f"doc-{i}" for i in range(12)]
    for name in names:
        acme.ingest(name, f"The passkey of {name} is 4{len(name)}21. " * 4)
    owners = {cluster.owner_of(f"titans:{{acme:{name}}}:meta").port for name in names}
    assert owners == {node.port for node in cluster.primaries}  # each key on the node its slot names:
    for name in names:
        owner = cluster.owner_of(f"titans:{{acme:{name}}}:state").client()
        assert owner.exists(f"titans:{{acme:{name}}}:meta", f"titans:{{acme:{name}}}:state") == 2

    assert acme.chat("doc-0", "What is the passkey?", **GREEDY)
    assert "".join(acme.chat("doc-0", "Again?", stream=True, **GREEDY))
    assert acme.get_session("doc-0").version == 3
    copy = acme.fork_session("doc-1", "doc-1-copy")
    assert copy.tokens_seen == acme.get_session("doc-1").tokens_seen
    state = acme.export_state("doc-2")
    assert acme.import_state("doc-2-restored", state).tokens_seen == acme.get_session("doc-2").tokens_seen
    assert acme.reset_session("doc-3").tokens_seen == 0
    assert acme.session_memory("doc-4").version == 1
    acme.delete_session("doc-5")
    listed, after = [], None
    while True:  # pages of 5, in creation order
        page = acme.list_sessions(limit=5, after=after)
        listed += [s.id for s in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert listed == [n for n in names if n != "doc-5"] + ["doc-1-copy", "doc-2-restored"]
    with pytest.raises(NotFoundError):
        globex.get_session("doc-0")
    assert globex.list_sessions().data == []
    assert httpx.get(server.url + "/ready").json()["store"] is True

    acme.create_session("brief", ttl_seconds=1)  # a TTL runs out on the cluster as on one node
    deadline = time.monotonic() + 60
    while "brief" in [s.id for s in acme.list_sessions(limit=100).data]:
        assert time.monotonic() < deadline, "the session outlived its TTL by a minute"
        time.sleep(0.2)
    with pytest.raises(NotFoundError):
        acme.get_session("brief")


def test_two_servers_racing_on_one_session_keep_every_commit_in_order(cluster, start_server, tmp_path):
    servers = [start_server(tmp_path / f"d{i}", *on(cluster, "--redis-wait-replicas", "1")) for i in range(2)]

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            body = {"prompt": "race", "session_id": "raced", **GREEDY}
            calls = [http.post(servers[i % 2].url + "/v1/completions", json=body) for i in range(16)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(race())
    assert [a.status_code for a in answers] == [200] * 16
    assert sorted(int(a.headers["X-Session-Version"]) for a in answers) == list(range(1, 17))
    assert httpx.get(servers[1].url + "/v1/sessions/raced").json()["version"] == 16


@pytest.mark.parametrize("wait_replicas", [1, 0])
def test_a_primary_killed_under_load_is_replaced_and_loses_no_acknowledged_commit(
    fresh_cluster, start_server, tmp_path, wait_replicas
):
    """With WAIT, every acknowledged commit is on the replica that takes over: none may be lost.
    Without it, a commit acknowledged but not yet replicated can be lost; the run reports it."""
    servers = [
        start_server(tmp_path / f"d{i}", *on(fresh_cluster, "--redis-wait-replicas", str(wait_replicas)))
        for i in range(2)
    ]
    report = asyncio.run(failover_under_load(fresh_cluster, [s.url for s in servers], down=3.0))
    print(report)
    assert report["sessions_on_the_killed_primary"] > 0 and report["acknowledged"] > 0
    assert report["every_session_of_the_shard_committed_after_promotion_seconds"] < 20  # recovered alone
    assert report["refusals_without_retry_after"] == 0
    assert report["versions_beyond_acknowledged_and_uncertain"] == 0  # nothing committed unasked
    restarted = report["killed_node_restarted_after_promotion_seconds"]
    if wait_replicas:  # nothing acknowledged while the shard had no replica, and nothing lost
        assert report["first_commit_on_the_shard_after_promotion_seconds"] > restarted
        assert report["commit_uncertain"] > 0 and report["lost_acknowledged"] == 0
    else:  # served by the promoted node alone, before the killed one came back
        assert report["first_commit_on_the_shard_after_promotion_seconds"] < restarted


def test_a_shard_without_a_primary_is_503_with_retry_after_and_the_others_serve(
    fresh_cluster, start_server, tmp_path
):
    """Its primary and replica both gone: its sessions wait out the client's retries (~7 s), then
    answer 503; the other shards serve on. (The shard holding the tenant's index is spared: while
    that one is down, the tenant cannot create sessions.)"""
    server = start_server(tmp_path / "data", *on(fresh_cluster))
    index = fresh_cluster.owner_of("titans:{default}:sessions")
    shard = next(i for i, node in enumerate(fresh_cluster.primaries) if node is not index)
    names = [f"shard-{i}" for i in range(12)]
    owners = {n: fresh_cluster.owner_of(f"titans:{{default:{n}}}:meta") for n in names}
    lost = [n for n in names if owners[n] is fresh_cluster.primaries[shard]]
    kept = [n for n in names if n not in lost]
    assert lost and kept
    fresh_cluster.kill(fresh_cluster.replicas[shard])  # the replica first: nobody takes over
    fresh_cluster.kill(fresh_cluster.primaries[shard])
    with httpx.Client(base_url=server.url, timeout=120) as http:
        refused = http.post("/v1/completions", json={"prompt": "x", "session_id": lost[0], **GREEDY})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "store_unavailable"
        for name in kept:
            served = http.post("/v1/completions", json={"prompt": "x", "session_id": name, **GREEDY})
            assert served.status_code == 200


def test_replicas_cannot_be_waited_for_on_the_embedded_redis(start_server, tmp_path):
    with pytest.raises(RuntimeError, match="exited"):
        start_server(tmp_path / "data", "--redis-wait-replicas", "1")
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "--redis-wait-replicas needs --redis-url" in log
