"""Hostile input, round two (issue 27): text that is not text, unbounded metadata, prompts that
slipped past the precheck, and one tenant's CPU work slowing another's."""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time

import httpx
import pytest
from probes import HealthProbe
from redis import Redis

from titans_server.auth import hash_key

SURROGATE = '"\\ud800"'  # a lone surrogate, as JSON writes it


def raw_json(template: str) -> bytes:
    """A JSON body with ``@`` replaced by a lone surrogate (no encoder would write one)."""
    return template.replace("@", SURROGATE).encode()


def post_raw(http: httpx.Client, path: str, body: bytes, kind: str = "application/json") -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": kind})


def refusals(http: httpx.Client) -> dict[str, float]:
    """``titans:refusals_total`` by reason, from /metrics."""
    counts = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("titans:refusals_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


# Every route and field a client's text reaches, each with a lone surrogate (or invalid UTF-8).
NOT_TEXT = {
    "chat content": (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": @}], "session_id": "%s"}',
    ),
    "chat content part": (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": [{"type": "text", "text": @}]}], "session_id": "%s"}',
    ),
    "chat stop": (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": "hi"}], "stop": [@], "session_id": "%s"}',
    ),
    "chat model": (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": "hi"}], "model": @, "session_id": "%s"}',
    ),
    "chat key": (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": "hi", @: 1}], "session_id": "%s"}',
    ),
    "completion prompt": ("/v1/completions", '{"prompt": @, "session_id": "%s"}'),
    "session metadata value": ("/v1/sessions", '{"id": "%s", "metadata": {"k": @}}'),
    "session metadata key": ("/v1/sessions", '{"id": "%s", "metadata": {@: "v"}}'),
    "ingest JSON text": ("/v1/sessions/%s/ingest", '{"text": @}'),
}


@pytest.mark.parametrize("field", NOT_TEXT)
def test_a_lone_surrogate_is_refused_and_nothing_is_committed(http, session_id, field):
    path, template = NOT_TEXT[field]
    body = raw_json(template.replace("%s", session_id)) if "%s" in template else raw_json(template)
    refused = post_raw(http, path.replace("%s", session_id), body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_text"
    assert http.get(f"/v1/sessions/{session_id}").status_code == 404  # never committed


@pytest.mark.parametrize(
    ("path", "kind", "body"),
    [
        ("/v1/chat/completions", "application/json", b'{"messages": [{"role": "user", "content": "\xff"}]}'),
        ("/v1/sessions", "application/json", b'{"metadata": {"k": "\xed\xa0\x80"}}'),  # a surrogate in UTF-8
        ("/v1/sessions/%s/ingest", "text/plain", b"caf\xe9"),
    ],
)
def test_invalid_utf8_is_refused_and_nothing_is_committed(http, session_id, path, kind, body):
    listed = http.get("/v1/sessions?limit=100").json()["data"]
    refused = post_raw(http, path.replace("%s", session_id), body, kind)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_text"
    assert http.get(f"/v1/sessions/{session_id}").status_code == 404
    assert http.get("/v1/sessions?limit=100").json()["data"] == listed


def test_a_multipart_document_that_is_not_utf8_is_refused(http, session_id):
    refused = http.post(f"/v1/sessions/{session_id}/ingest", files={"file": ("doc.txt", b"\xff\xfe")})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_text"
    assert http.get(f"/v1/sessions/{session_id}").status_code == 404


def test_a_session_stored_with_a_lone_surrogate_can_be_listed_read_forked_and_deleted(
    http, server, session_id
):
    """As a server before the fix stored it: the metadata's JSON holds ``"\\ud800"``."""
    assert http.post("/v1/sessions", json={"id": session_id, "metadata": {"k": "v"}}).status_code == 201
    with Redis(unix_socket_path=str(server.data_dir / "redis.sock")) as redis:
        redis.hset(f"titans:{{default:{session_id}}}:meta", "metadata", json.dumps({"k": "a\ud800b"}))
    read = http.get(f"/v1/sessions/{session_id}")
    assert read.status_code == 200 and read.json()["metadata"] == {"k": "a?b"}
    listed = http.get("/v1/sessions?limit=100")
    assert listed.status_code == 200 and session_id in [s["id"] for s in listed.json()["data"]]
    fork = http.post(f"/v1/sessions/{session_id}/fork", json={"id": session_id + "-f"})
    assert fork.status_code == 201 and fork.json()["metadata"] == {"k": "a?b"}
    for name in (session_id, session_id + "-f"):
        assert http.delete(f"/v1/sessions/{name}").status_code == 200
        assert http.get(f"/v1/sessions/{name}").status_code == 404


def test_metadata_is_bounded_on_create_and_fork(http, server, session_id):
    before = refusals(http).get("metadata_too_large", 0)
    for metadata in ({str(i): "v" for i in range(17)}, {"k": "v" * 8192}, {"k" * 8192: "v"}):
        refused = http.post("/v1/sessions", json={"id": session_id, "metadata": metadata})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "metadata_too_large"
    fits = {str(i): "v" * 500 for i in range(16)}
    assert http.post("/v1/sessions", json={"id": session_id, "metadata": fits}).status_code == 201
    # A session stored before the limit with 1 MB of metadata is not copied by a fork.
    with Redis(unix_socket_path=str(server.data_dir / "redis.sock")) as redis:
        redis.hset(f"titans:{{default:{session_id}}}:meta", "metadata", json.dumps({"k": "x" * (1 << 20)}))
    fork = http.post(f"/v1/sessions/{session_id}/fork", json={"id": session_id + "-f"})
    assert fork.status_code == 400 and fork.json()["error"]["code"] == "metadata_too_large"
    assert http.get(f"/v1/sessions/{session_id}-f").status_code == 404
    assert refusals(http)["metadata_too_large"] == before + 4


def test_a_body_of_many_values_is_refused_unparsed(http, server, session_id):
    """330,000 metadata keys (3.5 MB) were a 201 that stalled /health 2 s; 130,000 tiny objects took
    0.9 s to parse. Both are counted off the event loop and refused before they are parsed."""
    keys = {f"k{i}": "" for i in range(330_000)}
    messages = [{"role": "user", "content": ""}] * 65_000
    with HealthProbe(server.url) as probe:
        for path, body in (
            ("/v1/sessions", {"id": session_id, "metadata": keys}),
            ("/v1/chat/completions", {"messages": messages, "max_tokens": 1}),
        ):
            refused = http.post(path, json=body)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_many_json_values"
    probe.check()
    assert http.get(f"/v1/sessions/{session_id}").status_code == 404


def test_a_prompt_is_bounded_in_messages_and_bytes_before_it_is_encoded(http, server):
    """65,000 empty messages counted as ~32k tokens and were encoded on the event loop (~260k tokens);
    ``"\\n" + 28 spaces`` is one token per 29 bytes, so 960 KB passed the token limit."""
    many = [{"role": "user", "content": "a"}] * 2049
    spaces = ("\n" + " " * 28) * 33_000  # 990 KB
    cases = [
        ("/v1/chat/completions", {"messages": many, "max_tokens": 1}, "too_many_messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": spaces}]}, "prompt_too_long"),
        ("/v1/completions", {"prompt": spaces, "max_tokens": 1}, "prompt_too_long"),
    ]
    with HealthProbe(server.url) as probe:
        for path, body, code in cases * 2:
            refused = http.post(path, json=body)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == code, refused.text
    probe.check()


KEYS = {"tenant-a": "a" * 40, "tenant-b": "b" * 40}


@pytest.fixture
def two_tenants(start_server, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"{tenant} {hash_key(key)}\n" for tenant, key in KEYS.items()))
    return start_server(tmp_path / "data", "--api-keys-file", str(keys), "--max-ingest-tokens", "200000")


def chat_seconds(url: str, key: str, count: int) -> list[float]:
    """Seconds each of ``count`` one-token chats took, one after another ("": no API key)."""
    seconds = []
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
        for _ in range(count):
            begin = time.perf_counter()
            answer = http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            )
            seconds.append(time.perf_counter() - begin)
            assert answer.status_code == 200, answer.text
    return seconds


def within_baseline(attacked: list[float], baseline: list[float], margin: float = 2.0) -> bool:
    """The median under attack within twice the median of the same run's baseline, plus a margin
    for a busy machine, whose load moves between the two measurements (1.7 s against 0.27 s was
    seen once at load 10); issue 27 measured 0.2 s becoming 7.7-16 s."""
    return statistics.median(attacked) <= 2 * statistics.median(baseline) + margin


def test_one_tenants_refused_ingests_do_not_slow_another_tenants_chats(two_tenants):
    """Tenant A keeps eight 3 MB ingests in flight, each tokenised up to --max-ingest-tokens and
    refused (413); tenant B's chats, measured before and during the attack, stay near baseline."""
    url = two_tenants.url
    document = ("lorem ipsum dolor sit amet " * 120_000).encode()  # 3.2 MB: 413 at 200,000 tokens
    baseline = chat_seconds(url, KEYS["tenant-b"], 7)
    stop, refused, statuses = threading.Event(), threading.Event(), []

    def attacker() -> None:
        headers = {"Authorization": f"Bearer {KEYS['tenant-a']}"}
        with httpx.Client(base_url=url, timeout=300, headers=headers) as http:
            for _ in range(40):  # bounded, should the test hang
                if stop.is_set():
                    return
                status = http.post("/v1/sessions/a-doc/ingest", content=document).status_code
                statuses.append(status)
                refused.set()

    attackers = [threading.Thread(target=attacker) for _ in range(8)]
    for thread in attackers:
        thread.start()
    try:
        assert refused.wait(120), "the attack never got an answer"
        with HealthProbe(url) as probe:
            attacked = chat_seconds(url, KEYS["tenant-b"], 7)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(300)
    assert set(statuses) == {413}, statuses
    assert within_baseline(attacked, baseline), (baseline, attacked)
    probe.check()


def test_work_for_clients_that_left_stops(start_server, tmp_path):
    """Four 20 MB documents sent and their connections closed at once: their tokenising is dropped
    (it kept a core busy for a minute, and another client's chat went from 0.1 s to 51 s)."""
    server = start_server(tmp_path / "data", "--max-ingest-tokens", str(30 << 20))
    baseline = chat_seconds(server.url, "", 5)
    document = ("lorem ipsum dolor sit amet " * 780_000).encode()  # 21 MB
    with httpx.Client(base_url=server.url, timeout=60) as http, contextlib.ExitStack() as open_:
        for index in range(4):
            left = open_.enter_context(raw_connection(server.url))
            left.sendall(
                f"POST /v1/sessions/left-{index}/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(document)}\r\n\r\n".encode()
                + document
            )
        assert until(lambda: cpu_jobs(http) >= 1, 120), "the documents were never tokenised"
        open_.close()  # the clients leave
        assert until(lambda: cpu_jobs(http) == 0, 20), "the work of clients that left went on"
        attacked = chat_seconds(server.url, "", 5)
        assert within_baseline(attacked, baseline), (baseline, attacked)
        for index in range(4):
            assert http.get(f"/v1/sessions/left-{index}").status_code == 404


def raw_connection(url: str) -> socket.socket:
    return socket.create_connection((httpx.URL(url).host, httpx.URL(url).port), timeout=60)


def cpu_jobs(http: httpx.Client) -> float:
    line = next(
        line for line in http.get("/metrics").text.splitlines() if line.startswith("titans:cpu_jobs ")
    )
    return float(line.split()[1])


def until(condition, seconds: float) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def read_answer(connection: socket.socket) -> bytes:
    """What the server sends until it closes the connection or goes quiet for 5 s."""
    connection.settimeout(5)
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


@pytest.mark.parametrize("head", ["X-Big: " + "a" * 100_000, "\r\n".join(f"X-{i}: v" for i in range(6000))])
def test_a_request_head_over_the_limit_is_refused_however_it_arrives(server, head):
    """A 100 KB head, or 6,000 headers, in one write were served: the 16 KiB limit held only for
    heads arriving in pieces."""
    with raw_connection(server.url) as big:
        big.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n\r\n".encode())
        answer = read_answer(big)
    assert answer.startswith(b"HTTP/1.1 400") and b"header_too_large" in answer, answer[:200]


def test_a_pipelined_request_head_over_the_limit_is_refused(server):
    """A small request and a 100 KB head behind it in one write: the first is served, the second
    refused (h11 parses a buffered head whole, past the limit for heads still arriving)."""
    small = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    big = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + "a" * 100_000 + "\r\n\r\n"
    with raw_connection(server.url) as connection:
        connection.sendall((small + big).encode())
        connection.settimeout(10)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := connection.recv(65536):  # until the server closes the connection
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 400" in answer and b"header_too_large" in answer


def test_two_authorization_headers_are_refused(two_tenants):
    """Which key names the tenant? Neither: the request is refused (the last one used to decide)."""
    both = httpx.Headers(
        [("Authorization", f"Bearer {KEYS['tenant-a']}"), ("Authorization", f"Bearer {KEYS['tenant-b']}")]
    )
    with httpx.Client(base_url=two_tenants.url, timeout=60) as http:
        refused = http.get("/v1/sessions", headers=both)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "duplicate_authorization"
        one = http.get("/v1/sessions", headers={"Authorization": f"Bearer {KEYS['tenant-b']}"})
        assert one.status_code == 200
        assert refusals(http)["duplicate_authorization"] == 1


def test_a_keyless_server_refuses_other_sites_but_serves_clients_and_its_pages(http, server, session_id):
    own = f"http://127.0.0.1:{server.port}"
    for headers in (
        {"Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://attacker.example"},  # a browser without Sec-Fetch-*
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},  # a sandboxed frame, a file:// page
    ):
        for path, body in ((f"/v1/sessions/{session_id}/ingest", "some words"), ("/v1/sessions", session_id)):
            refused = http.post(path, content=body, headers={"Content-Type": "text/plain", **headers})
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_site", headers
    assert http.get(f"/v1/sessions/{session_id}").status_code == 404
    # The playground's own requests, curl's and the SDK's: served.
    same_origin = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
    assert http.post("/v1/sessions", json={"id": session_id}, headers=same_origin).status_code == 201
    assert http.post(f"/v1/sessions/{session_id}/ingest", content="a few words").status_code == 200
    upload = http.post(f"/v1/sessions/{session_id}/ingest", files={"file": ("notes.txt", b"more words")})
    assert upload.status_code == 200
    # DNS rebinding: another name for this address is not served.
    rebound = http.get("/v1/sessions", headers={"Host": f"attacker.example:{server.port}"})
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert http.get("/health", headers={"Host": f"localhost:{server.port}"}).status_code == 200
    for page in ("/playground/", "/docs"):
        shown = http.get(page)
        assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
        assert shown.headers["x-frame-options"] == "DENY"


def test_a_keyed_server_answers_other_origins_only_where_configured(start_server, tmp_path):
    server = start_server(
        tmp_path / "data", "--api-key", "k" * 32, "--cors-origins", '["http://app.example"]'
    )
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        allowed = http.options("/v1/sessions", headers={"Origin": "http://app.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        other = http.options("/v1/sessions", headers={"Origin": "http://attacker.example", **preflight})
        assert "access-control-allow-origin" not in other.headers


def test_a_slow_body_is_cut_off_and_an_honest_slow_upload_is_not(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--min-body-rate", "2000", "--body-rate-window", "1")
    with raw_connection(server.url) as slow:
        slow.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
        slow.settimeout(0.3)
        begin, cut = time.perf_counter(), False
        while time.perf_counter() - begin < 30 and not cut:  # a byte every 0.3 s: 3 bytes a second
            try:
                slow.sendall(b" ")
                cut = slow.recv(65536) == b""
            except TimeoutError:
                pass
            except OSError:
                cut = True
        assert cut and time.perf_counter() - begin < 10
    body = b" " * 95_000 + b'{"id": "uploaded-slowly"}'  # 30 KB a second: 3 s
    with raw_connection(server.url) as honest:
        honest.sendall(
            f"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for start in range(0, len(body), 3000):
            honest.sendall(body[start : start + 3000])
            time.sleep(0.1)
        assert read_answer(honest).startswith(b"HTTP/1.1 201")
    with httpx.Client(base_url=server.url) as http:
        assert refusals(http)["body_too_slow"] == 1


def test_connections_past_the_limit_are_refused(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--max-connections", "20")
    with httpx.Client(base_url=server.url) as kept, contextlib.ExitStack() as held:
        assert kept.get("/health").status_code == 200  # one connection, kept alive
        answers = []
        for _ in range(30):
            connection = held.enter_context(raw_connection(server.url))
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answers.append(read_answer(connection))
        served = sum(answer.startswith(b"HTTP/1.1 200") for answer in answers)
        refused = sum(
            answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer for answer in answers
        )
        assert (served, refused) == (19, 11), answers
        assert kept.get("/health").status_code == 200
        held.close()
        assert until(
            lambda: kept.get("/health").status_code == 200 and refusals(kept)["too_many_connections"] == 11,
            10,
        )
    assert httpx.get(server.url + "/health").status_code == 200  # a fresh connection


def test_requests_waiting_on_one_session_are_bounded(start_server, tmp_path, session_id):
    server = start_server(tmp_path / "data", "--max-waiting-per-session", "3", "--max-new-tokens", "100000")
    endless = {"max_tokens": 100_000, "min_tokens": 100_000, "ignore_eos": True, "stream": True}
    chat = {"messages": [{"role": "user", "content": "go on"}], "session_id": session_id, "max_tokens": 1}
    statuses = []
    with httpx.Client(base_url=server.url, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json={**chat, **endless}) as holder:
            lines = holder.iter_lines()  # kept: a line iterator dropped midway closes the connection
            next(line for line in lines if '"content": "' in line)
            waiters = [
                threading.Thread(
                    target=lambda: statuses.append(
                        httpx.post(server.url + "/v1/chat/completions", json=chat, timeout=120).status_code
                    )
                )
                for _ in range(5)
            ]
            for thread in waiters:
                thread.start()
            assert until(lambda: statuses.count(429) == 3, 60), statuses
        for thread in waiters:
            thread.join(120)
        assert sorted(statuses) == [200, 200, 429, 429, 429]
        assert refusals(http)["session_queue_full"] == 3


def test_one_tenant_takes_at_most_its_share_of_the_engine_queue(start_server, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"{tenant} {hash_key(key)}\n" for tenant, key in KEYS.items()))
    server = start_server(
        tmp_path / "data", "--api-keys-file", str(keys), "--max-queue", "8", "--max-new-tokens", "100000"
    )
    endless = {
        "messages": [{"role": "user", "content": "go on"}],
        "max_tokens": 100_000,
        "min_tokens": 100_000,
    }
    a = {"Authorization": f"Bearer {KEYS['tenant-a']}"}
    with httpx.Client(base_url=server.url, timeout=120) as http, contextlib.ExitStack() as streams:
        first_events, kept = [], []  # a line iterator dropped midway closes its connection
        for _ in range(8):
            stream = streams.enter_context(
                http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={**endless, "ignore_eos": True, "stream": True},
                    headers=a,
                )
            )
            kept.append(stream.iter_lines())
            events = (line for line in kept[-1] if line.startswith("data: ") and '"role"' not in line)
            first_events.append(next(events))
        codes = [json.loads(event[6:]).get("error", {}).get("code") for event in first_events]
        assert codes.count("tenant_queue_full") == 4 and codes.count(None) == 4, codes
        b = {"Authorization": f"Bearer {KEYS['tenant-b']}"}
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        assert http.post("/v1/chat/completions", json=chat, headers=b).status_code == 200
