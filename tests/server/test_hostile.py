"""Hostile input (issue 20): bounded work before limits, a responsive event loop, and cancellations
that commit nothing."""

from __future__ import annotations

import random
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from probes import HealthProbe

from titans_core.tokenizer import Tokenizer
from titans_server.cpu_jobs import drive, encode_texts

PRETRAINED = Path(__file__).parents[2] / "titans_core" / "pretrained"


def words(rng: random.Random, count: int) -> str:
    """Text that exercises a pre-tokenizer: contractions, digits, punctuation, runs of whitespace."""
    alphabet = "abcxyzABC0123456789'.,!?-_()é日本\u00a0\x1c"
    pieces = []
    for _ in range(count):
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        pieces += [rng.choice(["", "'s", "'re", "'t"]) and word + rng.choice(["'s", "'re", "n't"]) or word]
        pieces.append(rng.choice([" ", " ", "  ", "\n", "\n\n", "\t", " \n "]))
    return "".join(pieces)


@pytest.mark.parametrize("source", ["byte-level", "default"])
def test_a_document_encoded_in_pieces_is_the_whole_texts_encoding(source):
    if source == "byte-level":
        tokenizer = Tokenizer.byte_level()
    else:
        path = PRETRAINED / source / "tokenizer.json"
        if not path.exists():
            pytest.skip(f"no {path}")
        tokenizer = Tokenizer.from_file(path)
    rng = random.Random(20)
    for trial in range(40):
        text = words(rng, rng.randint(0, 300))
        for piece in (7, 16, 100):
            (tokens,) = drive(encode_texts([text], 10**9, piece), tokenizer)
            assert tokens.tolist() == tokenizer.encode(text), (trial, piece)


def test_encoding_stops_at_the_limit():
    encoded = []

    class Counting:
        def encode(self, text: str) -> list[int]:
            encoded.append(len(text))
            return [0] * len(text)

    assert drive(encode_texts(["word " * 1_000_000], 1000, 4096), Counting()) is None
    assert sum(encoded) < 100_000  # a few pieces, not the 5 MB
    (tokens,) = drive(encode_texts(["a" * 1000], 1000, 4096), Counting())
    assert tokens.tolist() == [0] * 1000


@pytest.fixture
def few_tokens(start_server, tmp_path):
    return start_server(tmp_path / "data", "--max-ingest-tokens", "1000", "--max-ingest-bytes", str(64 << 20))


def test_a_huge_document_is_refused_before_it_is_tokenised(few_tokens):
    with httpx.Client(base_url=few_tokens.url, timeout=60) as http:
        begin = time.perf_counter()
        refused = http.post("/v1/sessions/big/ingest", content=b"a" * (16 << 20))
        assert refused.status_code == 413 and "--max-ingest-tokens" in refused.json()["error"]["message"]
        assert time.perf_counter() - begin < 5  # tokenising all of it took 9 s idle
        begin = time.perf_counter()
        invalid = http.post("/v1/sessions/-bad/ingest", content=b"a " * (8 << 20))
        assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "session_id"
        assert time.perf_counter() - begin < 5
        assert http.get("/v1/sessions/big").status_code == 404


def test_health_answers_while_a_document_is_tokenised(start_server, tmp_path):
    """All of a 7 MB document is tokenised (seconds), and refused only at its last piece: the engine's
    work, which competes for the CPU, never starts."""
    text = words(random.Random(1), 700_000).encode()
    server = start_server(tmp_path / "data", "--max-ingest-tokens", str(len(text) - 1))  # bytes: tokens
    with HealthProbe(server.url) as probe, httpx.Client(base_url=server.url, timeout=120) as http:
        refused = http.post("/v1/sessions/long/ingest", content=text)
        assert refused.status_code == 413
    probe.check()


def leave_early(http: httpx.Client, request: httpx.Request, after_first_chunk: bool) -> None:
    """Send ``request`` as a stream and leave right after the headers or after the first chunk."""
    response = http.send(request, stream=True)
    try:
        assert response.status_code == 200
        if after_first_chunk:
            next(line for line in response.iter_lines() if line.startswith("data: "))
    finally:
        response.close()


def test_a_stream_left_at_any_point_commits_nothing(server, session_id):
    endless = {"max_tokens": 400, "min_tokens": 400, "ignore_eos": True, "stream": True}
    chat = {"messages": [{"role": "user", "content": "go on"}], "session_id": session_id, **endless}
    document = words(random.Random(3), 4_000)  # ~20k tokens, fed in 2k pieces: far from done at the first
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/v1/sessions", json={"id": session_id}).status_code == 201
        for trial in range(6):
            after_first_chunk = trial % 2 == 1
            leave_early(
                http, http.build_request("POST", "/v1/chat/completions", json=chat), after_first_chunk
            )
            ingest = http.build_request(
                "POST", f"/v1/sessions/{session_id}/ingest?stream=true", content=document
            )
            leave_early(http, ingest, after_first_chunk)
        # Waits for whatever still holds the session, then commits once.
        done = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1, "session_id": session_id})
        assert done.status_code == 200 and done.headers["x-session-version"] == "1"
    log = (server.data_dir.parent / f"server-{server.port}.log").read_text()
    assert "never retrieved" not in log and "Traceback" not in log


def test_a_huge_state_header_is_refused_unparsed(server):
    header = b"[" + b"[]," * (7 << 20) + b"[]]"  # 21 MB: seconds and gigabytes to parse as JSON
    data = len(header).to_bytes(8, "little") + header
    with HealthProbe(server.url) as probe, httpx.Client(base_url=server.url, timeout=60) as http:
        begin = time.perf_counter()
        refused = http.put("/v1/sessions/poison/state", content=data)
        seconds = time.perf_counter() - begin
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "invalid_state" and len(error["message"]) < 200
    assert seconds < 5
    probe.check()


def raw_connection(url: str) -> socket.socket:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    connection = socket.create_connection((host, port), timeout=60)
    return connection


def read_response(connection: socket.socket) -> bytes:
    """One whole response: its head and body may come in separate segments."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_after(connection: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``connection``, sending it ``trickle`` a byte at a time."""
    begin = time.perf_counter()
    connection.settimeout(0.2 if trickle else 60)
    for byte in trickle:
        try:
            connection.sendall(bytes([byte]))
        except OSError:  # closed under us: as wanted
            return time.perf_counter() - begin
        try:
            if connection.recv(65536) == b"":
                return time.perf_counter() - begin
        except TimeoutError:
            pass
    connection.settimeout(60)
    while connection.recv(65536):
        pass
    return time.perf_counter() - begin


@pytest.fixture
def guarded(start_server, tmp_path):
    return start_server(
        tmp_path / "data",
        "--api-key",
        "k" * 32,
        "--header-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
        "--max-header-bytes",
        "4096",
    )


def test_a_connection_must_send_its_headers_in_time(guarded):
    """--header-timeout: a silent connection, one that trickles its headers a byte at a time, and a
    kept-alive one that starts its next request and stalls are closed (a silent one stayed 90 s)."""
    with raw_connection(guarded.url) as silent:
        assert 0.9 < closed_after(silent) < 30
    with raw_connection(guarded.url) as trickling:
        assert 0.9 < closed_after(trickling, b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000) < 30
    with raw_connection(guarded.url) as kept:
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /health HTTP/1.1\r\n")
        assert 0.9 < closed_after(kept) < 30


def test_an_idle_connection_is_closed_after_its_response(guarded):
    with raw_connection(guarded.url) as idle:
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        assert 0.9 < closed_after(idle) < 30  # --keep-alive-timeout 1


def test_a_request_head_over_the_limit_is_refused(guarded):
    with raw_connection(guarded.url) as big:
        big.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 8192)
        assert big.recv(65536).startswith(b"HTTP/1.1 400")
    with httpx.Client(base_url=guarded.url) as http:  # under it: served
        assert http.get("/health", headers={"X-Fit": "a" * 3000}).status_code == 200


def test_a_request_without_a_key_is_refused_before_its_body_is_read(guarded):
    """The 401 comes while the declared 4 MB body is still unsent: nothing of it was read or parsed."""
    with raw_connection(guarded.url) as keyless:
        keyless.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000000\r\n\r\n{"
        )
        answer = read_response(keyless)
        assert answer.startswith(b"HTTP/1.1 401") and b"missing_api_key" in answer
    with httpx.Client(base_url=guarded.url, timeout=60) as http:
        wrong = http.post(
            "/v1/sessions", content=b"{not json", headers={"Authorization": "Bearer " + "x" * 32}
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        right = http.post(
            "/v1/sessions", content=b"{not json", headers={"Authorization": "Bearer " + "k" * 32}
        )
        assert right.status_code == 400  # the key holds: only now is the body parsed


def test_health_answers_while_a_long_prompt_is_refused(server):
    """A 3.5 MB chat message: counted in pieces off the event loop and refused at the first piece
    past --max-prompt-tokens (encoding it whole on the loop took 3.7 s)."""
    text = words(random.Random(4), 350_000)[:3_500_000]
    chat = {"messages": [{"role": "user", "content": text}], "max_tokens": 1}
    with HealthProbe(server.url) as probe, httpx.Client(base_url=server.url, timeout=120) as http:
        for path, body in (
            ("/v1/chat/completions", chat),
            ("/v1/completions", {"prompt": text, "max_tokens": 1}),
        ):
            refused = http.post(path, json=body)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "prompt_too_long"
    probe.check()
