"""Kept versions on a real Redis Cluster (tests/redis_cluster.py: 3 primaries, 3 replicas): a
session's history lives on its own slot's node, restores race chats without loss, a deleted
session's history goes, tenants stay apart, and history survives a server restart and a failover
of its primary (--redis-wait-replicas 1) like the current state."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load

from titans_client import NotFoundError, TitansClient
from titans_server.auth import hash_key, new_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_cluster import start_cluster  # noqa: E402

GREEDY = {"temperature": 0, "max_tokens": 2}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


def on(cluster, *flags: str) -> list[str]:
    return ["--redis-url", cluster.url, "--redis-cluster", "true", *flags]


def same_tensors(a: bytes, b: bytes) -> bool:
    first, second = load(a), load(b)
    return first.keys() == second.keys() and all(bool((first[k] == second[k]).all()) for k in first)


def test_history_on_every_primary_with_restores_deletes_and_tenants(cluster, start_server, tmp_path):
    keys = {"acme": new_key(), "globex": new_key()}
    (tmp_path / "keys").write_text("".join(f"{t} {hash_key(k)}\n" for t, k in keys.items()))
    server = start_server(tmp_path / "data", *on(cluster, "--api-keys-file", str(tmp_path / "keys")))
    acme = TitansClient(server.url, api_key=keys["acme"])
    globex = TitansClient(server.url, api_key=keys["globex"])
    names = [f"hist-{i}" for i in range(9)]
    for name in names:
        acme.ingest(name, f"The passkey of {name} is 4{len(name)}21. " * 2)
        acme.complete(name, "Go on", **GREEDY)
    owners = {cluster.owner_of(f"titans:{{acme:{name}}}:meta").port for name in names}
    assert owners == {node.port for node in cluster.primaries}
    for name in names:  # the history beside the state, on the node its slot names
        owner = cluster.owner_of(f"titans:{{acme:{name}}}:meta").client()
        prefix = f"titans:{{acme:{name}}}"
        assert owner.exists(f"{prefix}:meta", f"{prefix}:history", f"{prefix}:history:states") == 3
        assert [v.version for v in acme.versions(name)] == [2, 1]

    kept = acme.export_state("hist-0", version=1)
    assert acme.restore("hist-0", 1, if_version=2).version == 3
    assert same_tensors(acme.export_state("hist-0"), kept)

    async def race() -> list[int]:  # a restore and a completion at once: both land, in some order
        headers = {"Authorization": f"Bearer {keys['acme']}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=headers) as http:
            body = {"prompt": "More", "session_id": "hist-1", **GREEDY}
            answers = await asyncio.gather(
                http.post("/v1/completions", json=body),
                http.post("/v1/sessions/hist-1/restore", json={"version": 1}),
            )
        return [a.status_code for a in answers]

    assert asyncio.run(race()) == [200, 200]
    found = acme.versions("hist-1")
    assert found[0].version == 4 and sorted(v.made_by for v in found[:2]) == ["completion", "restore"]

    with pytest.raises(NotFoundError):
        globex.versions("hist-2")
    with pytest.raises(NotFoundError):
        globex.restore("hist-2", 1)

    acme.delete_session("hist-2")
    owner = cluster.owner_of("titans:{acme:hist-2}:meta").client()
    assert owner.keys("titans:{acme:hist-2}*") == []


def test_history_survives_a_server_restart_and_a_failover(cluster, start_server, tmp_path):
    """Last in this module: it kills a primary of the module's cluster."""
    flags = on(cluster, "--redis-wait-replicas", "1")
    server = start_server(tmp_path / "d1", *flags)
    with TitansClient(server.url) as client:
        client.ingest("durable", "The passkey is 4417. " * 2)
        client.complete("durable", "Go on", **GREEDY)
        before, kept = client.versions("durable"), client.export_state("durable", version=1)
    server.stop()
    owner = cluster.owner_of("titans:{default:durable}:meta")
    shard = cluster.primaries.index(owner)
    cluster.kill(owner)
    cluster.wait_promoted(cluster.replicas[shard])
    server = start_server(tmp_path / "d2", *flags)
    with TitansClient(server.url) as client:
        assert client.versions("durable") == before
        assert client.export_state("durable", version=1) == kept
        cluster.restart(owner)  # a replica again: commits with WAIT 1 are confirmed once more
        assert client.restore("durable", 1).version == 3
