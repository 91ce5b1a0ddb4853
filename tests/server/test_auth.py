"""API keys and tenants: every /v1 endpoint wants a key, and a tenant sees only its own sessions."""

from __future__ import annotations

import time

import httpx
import pytest

from titans_server.auth import hash_key, new_key, parse_keys

GREEDY = {"temperature": 0, "max_tokens": 3}


@pytest.fixture
def keys(tmp_path):
    made = {"acme": new_key(), "globex": new_key(), "single": new_key()}
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        f"# tenant sha256\nacme {hash_key(made['acme'])}\n\nglobex {hash_key(made['globex'])}  # a comment\n"
    )
    made["file"] = keys_file
    return made


@pytest.fixture
def secured(keys, start_server, tmp_path):
    return start_server(tmp_path / "data", "--api-keys-file", str(keys["file"]), "--api-key", keys["single"])


def as_tenant(server, key: str | None) -> httpx.Client:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def test_probes_are_open_and_v1_wants_a_key(secured, keys):
    anonymous = as_tenant(secured, None)
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200
    assert anonymous.get("/metrics").status_code == 200  # open unless --metrics-auth
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/v1/sessions"),
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions/x"),
        ("DELETE", "/v1/sessions/x"),
        ("POST", "/v1/sessions/x/fork"),
        ("POST", "/v1/sessions/x/reset"),
        ("GET", "/v1/sessions/x/state"),
        ("GET", "/v1/sessions/x/memory"),
        ("PUT", "/v1/sessions/x/state"),
        ("POST", "/v1/sessions/x/ingest"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
    ]:
        missing = anonymous.request(method, path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "missing_api_key"
        wrong = as_tenant(secured, keys["acme"] + "x").request(method, path)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key", path
    assert as_tenant(secured, keys["acme"]).get("/v1/models").status_code == 200
    assert as_tenant(secured, keys["single"]).get("/v1/models").status_code == 200


def test_a_tenant_never_sees_another_tenants_session(secured, keys):
    acme, globex = as_tenant(secured, keys["acme"]), as_tenant(secured, keys["globex"])
    assert acme.post("/v1/sessions", json={"id": "ledger", "metadata": {"owner": "acme"}}).status_code == 201
    chat = {"messages": [{"role": "user", "content": "secret"}], "session_id": "ledger", **GREEDY}
    assert acme.post("/v1/chat/completions", json=chat).status_code == 200

    for method, path in [
        ("GET", "/v1/sessions/ledger"),
        ("GET", "/v1/sessions/ledger/state"),
        ("GET", "/v1/sessions/ledger/memory"),
        ("POST", "/v1/sessions/ledger/fork"),
        ("POST", "/v1/sessions/ledger/reset"),
        ("DELETE", "/v1/sessions/ledger"),
    ]:
        answer = globex.request(method, path)
        assert answer.status_code == 404, path  # not 403: the id's existence does not leak
        assert answer.json()["error"]["code"] == "session_not_found"
    assert "ledger" not in [s["id"] for s in globex.get("/v1/sessions").json()["data"]]

    # The same id under another tenant is another session: globex's writes never reach acme's.
    assert globex.post(
        "/v1/completions", json={"prompt": "mine", "session_id": "ledger", **GREEDY}
    ).is_success
    exported = acme.get("/v1/sessions/ledger/state").content
    assert globex.put("/v1/sessions/ledger/state", content=exported).json()["version"] == 2
    assert globex.post("/v1/sessions/ledger/ingest", content="more text").is_success
    assert globex.delete("/v1/sessions/ledger").is_success

    mine = acme.get("/v1/sessions/ledger").json()
    assert (mine["version"], mine["metadata"]) == (1, {"owner": "acme"})
    assert [s["id"] for s in acme.get("/v1/sessions").json()["data"]].count("ledger") == 1


def test_the_openai_sdk_sends_its_api_key(secured, keys):
    from openai import AuthenticationError, OpenAI

    good = OpenAI(base_url=secured.url + "/v1", api_key=keys["globex"], max_retries=0)
    reply = good.chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "hi"}], **GREEDY
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    bad = OpenAI(base_url=secured.url + "/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(AuthenticationError):
        bad.models.list()


def test_keys_rotate_without_a_restart(secured, keys):
    fresh = new_key()
    original = keys["file"].read_text()
    try:
        keys["file"].write_text(original + f"acme {hash_key(fresh)}\n")
        assert as_tenant(secured, fresh).get("/v1/models").status_code == 200
        acme_lines = [line for line in original.splitlines() if not line.startswith("acme")]
        keys["file"].write_text("\n".join(acme_lines) + f"\nacme {hash_key(fresh)}\n")
        assert as_tenant(secured, keys["acme"]).get("/v1/models").status_code == 401
        keys["file"].write_text("acme not-a-hash\n")  # a broken edit keeps the last good keys
        time.sleep(0.01)
        assert as_tenant(secured, fresh).get("/v1/models").status_code == 200
    finally:
        keys["file"].write_text(original)
    assert as_tenant(secured, keys["acme"]).get("/v1/models").status_code == 200


def test_metrics_can_want_a_key(start_server, tmp_path):
    key = new_key()
    server = start_server(tmp_path / "data", "--api-key", key, "--metrics-auth", "true")
    assert httpx.get(server.url + "/metrics").status_code == 401
    ok = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and "titans:" in ok.text


def test_a_keys_file_is_checked_line_by_line():
    assert parse_keys(f"# c\n\nt1 {'ab' * 32}  # x\n") == [("t1", bytes.fromhex("ab" * 32))]
    for bad in ["t1", f"t:1 {'ab' * 32}", "t1 abc", f"t1 {'AB' * 32}", f"t1 {'ab' * 32} extra"]:
        with pytest.raises(ValueError, match="line 1"):
            parse_keys(bad)


def test_an_unreadable_keys_file_stops_the_start(start_server, tmp_path):
    with pytest.raises(RuntimeError, match="exited"):
        start_server(tmp_path / "data", "--api-keys-file", str(tmp_path / "missing"))


def test_an_empty_or_short_api_key_stops_the_start(start_server, tmp_path):
    for key in ("", "short"):
        with pytest.raises(RuntimeError, match="exited"):
            start_server(tmp_path / "data", "--api-key", key)


def test_deleting_the_keys_file_revokes_its_keys(secured, keys):
    assert as_tenant(secured, keys["acme"]).get("/v1/models").status_code == 200
    keys["file"].unlink()
    assert as_tenant(secured, keys["acme"]).get("/v1/models").status_code == 401
    assert as_tenant(secured, keys["single"]).get("/v1/models").status_code == 200  # not from the file
