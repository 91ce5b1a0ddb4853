"""A repeatable hostile-input run against a real server, and what it does to the server's memory.

    python tests/hostile_run.py [--model default] [--out report.json]

Starts ``titans-server`` with two tenants' keys, warms it up with ordinary chats, then sends what
issue 20's probe sent (over-long documents, state files with huge headers, a poisoned state, a
burst of new sessions past the cap, streams left early, oversized request heads, keyless
multi-megabyte JSON bodies) and what issue 27's sent: lone surrogates, 330,000 metadata keys,
65,000 empty messages, prompts of whitespace, eight 3 MB ingests kept in flight by one tenant while
the other chats, two 20 MB ingests at once, forty requests on one busy session, a 100 KB head in
one write, two Authorization headers, slow
bodies. Every hostile request must be refused (or cancelled) as documented. It reports the server's
resident memory (RSS) after the warm-up, after the attack, and after a further minute of ordinary
load (sampled every 15 s), plus its peak, and the victim tenant's chat latency before and during
the attack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import Server  # noqa: E402

from titans_core.state import read_metadata  # noqa: E402
from titans_server.auth import hash_key  # noqa: E402

KEY = "hostile-run-key-" + "k" * 32  # the attacker's
AUTH = {"Authorization": f"Bearer {KEY}"}
VICTIM = {"Authorization": "Bearer " + "hostile-run-victim-" + "v" * 32}


def memory(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of ``pid``, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def chat(session: str, text: str, **extra) -> dict:
    return {
        "model": "default",
        "session_id": session,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


async def ordinary(url: str, seconds: float, sessions: int = 8) -> int:
    """Chats and small ingests on a few sessions for ``seconds``; the requests served."""
    served, deadline = 0, time.monotonic() + seconds
    rng = random.Random(0)

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal served
        while time.monotonic() < deadline:
            session = f"normal-{rng.randrange(sessions)}"
            if rng.random() < 0.2:
                answer = await http.post(f"/v1/sessions/{session}/ingest", content="A short note. " * 50)
            else:
                answer = await http.post("/v1/chat/completions", json=chat(session, "Hello!", max_tokens=16))
            served += answer.status_code == 200
            assert answer.status_code in (200, 409), answer.text

    async with httpx.AsyncClient(base_url=url, headers=VICTIM, timeout=120) as http:
        await asyncio.gather(*(client(http, i) for i in range(4)))
    return served


async def attack(url: str) -> dict[str, list[int]]:
    """Every hostile request once or a few times; the status codes each got."""
    statuses: dict[str, list[int]] = {}

    def record(name: str, code: int) -> None:
        statuses.setdefault(name, []).append(code)

    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=300) as http:
        for _ in range(3):
            answer = await http.post("/v1/sessions/long-doc/ingest", content=b"a " * (4 << 20))
            record("document over --max-ingest-tokens (8 MB)", answer.status_code)
        header = b"[" + b"[]," * (7 << 20) + b"[]]"
        for _ in range(3):
            answer = await http.put(
                "/v1/sessions/poison/state", content=len(header).to_bytes(8, "little") + header
            )
            record("state with a 21 MB header", answer.status_code)
        await http.post("/v1/sessions/source/ingest", content="Some words to give the state a shape.")
        exported = (await http.get("/v1/sessions/source/state")).content
        tensors = load_tensors(exported)
        poisoned = {
            name: torch.full_like(t, 3e38) if t.is_floating_point() else t for name, t in tensors.items()
        }
        metadata = read_metadata(exported)
        for _ in range(3):
            answer = await http.put("/v1/sessions/poison/state", content=save_tensors(poisoned, metadata))
            record("state whose every value is 3e38", answer.status_code)
        burst = await asyncio.gather(
            *(
                http.post("/v1/chat/completions", json=chat(f"burst-{i}", "hi", max_tokens=1))
                for i in range(100)
            )
        )
        for answer in burst:
            record("100 concurrent chats on new ids (cap 50)", answer.status_code)
        for _ in range(20):
            endless = chat("left", "go on", max_tokens=200, min_tokens=200, ignore_eos=True, stream=True)
            async with http.stream("POST", "/v1/chat/completions", json=endless) as response:
                record("stream left after its first chunk", response.status_code)
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        break
    host, port = httpx.URL(url).host, httpx.URL(url).port
    for _ in range(4):
        with socket.create_connection((host, port), timeout=60) as raw:
            with contextlib.suppress(OSError):  # closed while sending: refused
                raw.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * (50 << 20))
            try:
                record("50 MB request head", int(raw.recv(64)[9:12] or b"0"))
            except OSError:  # reset after the 400, before it was read
                record("50 MB request head", 0)
    async with httpx.AsyncClient(base_url=url, timeout=60) as keyless:
        for _ in range(10):
            answer = await keyless.post("/v1/chat/completions", content=b'{"messages": "' + b"x" * (4 << 20))
            record("4 MB JSON body without a key", answer.status_code)
    return statuses


async def victim_chats(url: str, count: int = 5) -> list[float]:
    """Seconds each of ``count`` one-token chats of the other tenant took, one after another."""
    seconds = []
    async with httpx.AsyncClient(base_url=url, headers=VICTIM, timeout=300) as http:
        for _ in range(count):
            begin = time.perf_counter()
            answer = await http.post("/v1/chat/completions", json=chat("victim", "Hi!", max_tokens=1))
            assert answer.status_code == 200, answer.text
            seconds.append(round(time.perf_counter() - begin, 3))
    return seconds


async def round_two(url: str, report: dict) -> dict[str, list[int]]:
    """Issue 27's attacks; the status codes each got (0: the connection was cut)."""
    statuses: dict[str, list[int]] = {}

    def record(name: str, code: int) -> None:
        statuses.setdefault(name, []).append(code)

    surrogate = '"\\ud800"'
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=300) as http:
        for path, body in (
            ("/v1/chat/completions", '{"messages": [{"role": "user", "content": @}]}'),
            ("/v1/sessions", '{"metadata": {"k": @}}'),
        ):
            content = body.replace("@", surrogate).encode()
            answer = await http.post(path, content=content, headers={"Content-Type": "application/json"})
            record(f"lone surrogate ({path})", answer.status_code)
        keys = {f"k{i}": "" for i in range(330_000)}
        record(
            "330,000 metadata keys", (await http.post("/v1/sessions", json={"metadata": keys})).status_code
        )
        empty = [{"role": "user", "content": ""}] * 65_000
        answer = await http.post("/v1/chat/completions", json={"messages": empty})
        record("65,000 empty messages", answer.status_code)
        spaces = ("\n" + " " * 28) * 33_000
        answer = await http.post("/v1/chat/completions", json=chat(None, spaces))
        record("990 KB of whitespace (one token per 29 bytes)", answer.status_code)
        document = ("lorem ipsum dolor sit amet " * 120_000).encode()
        report["victim chat seconds, baseline"] = await victim_chats(url)

        async def flood() -> None:
            for _ in range(4):
                answer = await http.post("/v1/sessions/flood/ingest", content=document)
                record("eight 3 MB ingests in flight (past --max-ingest-tokens)", answer.status_code)

        attack = asyncio.gather(*(flood() for _ in range(8)))
        report["victim chat seconds, under the ingest flood"] = await victim_chats(url)
        await attack
        big = ("lorem ipsum dolor sit amet " * 780_000).encode()
        for answer in await asyncio.gather(
            *(http.post("/v1/sessions/big/ingest", content=big) for _ in range(2))
        ):
            record("two 20 MB ingests at once", answer.status_code)
        endless = chat("source", "go on", max_tokens=200, min_tokens=200, ignore_eos=True, stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=endless) as holder:
            lines = holder.aiter_lines()
            async for line in lines:
                if '"content": "' in line:
                    break
            waiting = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=chat("source", "x" * (2 << 20))) for _ in range(40))
            )
        for answer in waiting:
            record("40 requests on one busy session (2 MB each)", answer.status_code)
        both = [("Authorization", AUTH["Authorization"]), ("Authorization", VICTIM["Authorization"])]
        record(
            "two Authorization headers",
            (await http.get("/v1/sessions", headers=httpx.Headers(both))).status_code,
        )
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=60) as raw:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        record("100 KB head in one write", int(raw.recv(64)[9:12] or b"0"))
    slow = [socket.create_connection((host, port), timeout=60) for _ in range(50)]
    began = time.monotonic()
    for connection in slow:
        connection.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
        connection.setblocking(False)
    open_ = set(slow)
    while open_ and time.monotonic() - began < 40:  # a byte a second each
        for connection in list(open_):
            try:
                connection.sendall(b" ")
                if connection.recv(64) == b"":
                    open_.discard(connection)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(connection)
        time.sleep(1)
    record(
        f"50 bodies at a byte a second (cut within {time.monotonic() - began:.0f} s)", len(slow) - len(open_)
    )
    for connection in slow:
        connection.close()
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--normal-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        keys = Path(folder) / "keys.txt"
        keys.write_text(f"attacker {hash_key(KEY)}\nvictim {hash_key(VICTIM['Authorization'][7:])}\n")
        flags = ["--model", args.model, "--api-keys-file", str(keys), "--max-sessions-per-tenant", "50"]
        server = Server(Path(folder) / "data", *flags, "--max-ingest-tokens", "100000").start()
        try:
            pid = server.process.pid
            report: dict = {"model": args.model}
            asyncio.run(ordinary(server.url, 10))
            report["after warm-up"] = memory(pid)
            began = time.perf_counter()
            report["attack"] = asyncio.run(attack(server.url))
            report["attack"].update(asyncio.run(round_two(server.url, report)))
            report["attack seconds"] = round(time.perf_counter() - began, 1)
            report["after attack"] = memory(pid)
            samples = []
            for _ in range(max(1, round(args.normal_seconds / 15))):  # RSS every 15 s of normal load
                served = asyncio.run(ordinary(server.url, 15))
                samples.append({"served": served, **memory(pid)})
            report["normal load, every 15 s"] = samples
            report["after normal load"] = memory(pid)
            health = httpx.get(server.url + "/health", timeout=10)
            report["healthy"] = health.status_code == 200
        finally:
            server.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
