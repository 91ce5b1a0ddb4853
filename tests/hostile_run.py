"""A repeatable hostile-input run against a real server, and what it does to the server's memory.

    python tests/hostile_run.py [--model default] [--out report.json]

Starts ``titans-server`` with an API key, warms it up with ordinary chats, then sends what issue 20's
probe sent: over-long documents, state files with huge headers, a poisoned state, a burst of new
sessions past the cap, streams left early, oversized request heads, keyless multi-megabyte JSON
bodies. Every hostile request must be refused (or cancelled) as documented. It reports the server's
resident memory (RSS) after the warm-up, after the attack, and after a further minute of ordinary
load (sampled every 15 s), plus its peak.
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

KEY = "hostile-run-key-" + "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}


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

    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--normal-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        flags = ["--model", args.model, "--api-key", KEY, "--max-sessions-per-tenant", "50"]
        server = Server(Path(folder) / "data", *flags, "--max-ingest-tokens", "100000").start()
        try:
            pid = server.process.pid
            report: dict = {"model": args.model}
            asyncio.run(ordinary(server.url, 10))
            report["after warm-up"] = memory(pid)
            began = time.perf_counter()
            report["attack"] = asyncio.run(attack(server.url))
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
