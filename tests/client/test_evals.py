"""``titans eval``: the recall and ingest-loss evaluations, run through the API of a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

TITANS = str(Path(sys.executable).parent / "titans")


def run_eval(server, *args: str) -> dict:
    done = subprocess.run(
        [TITANS, "eval", *args, "--base-url", server.url],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # the JSON report comes last


def eval_sessions(server) -> list[str]:
    found, after = [], None
    while True:
        page = httpx.get(
            server.url + "/v1/sessions", params={"limit": 100, **({"after": after} if after else {})}
        )
        found += [s["id"] for s in page.json()["data"] if s["id"].startswith("eval-")]
        if not page.json()["has_more"]:
            return found
        after = page.json()["last_id"]


def test_passkey_reports_accuracy_ablation_and_settings(server):
    report = run_eval(server, "passkey", "--distance", "300", "--trials", "3", "--seed", "7")
    assert 0 <= report["accuracy"] <= 1 and 0 <= report["ablation_accuracy"] <= 1
    assert (report["distance"], report["trials"], report["seed"], report["model"]) == (
        300,
        3,
        7,
        "tiny-random",
    )
    assert 290 <= report["mean_distance_tokens"] <= 330  # calibrated to the server's own tokenizer
    assert eval_sessions(server) == []  # it cleans up after itself


def test_ingest_loss_compares_a_remembering_session_with_a_fresh_one(server, tmp_path):
    document = tmp_path / "held-out.txt"
    document.write_text("It was the best of times, it was the worst of times. " * 40)
    report = run_eval(server, "ingest-loss", str(document), "--json")
    assert report["first_half_tokens"] + report["second_half_tokens"] == len(document.read_bytes())
    assert report["gap"] == report["loss_fresh"] - report["loss_after_first_half"]
    assert all(report[k] > 0 for k in ("loss_fresh", "loss_after_first_half"))
    assert eval_sessions(server) == []


def test_conversation_reports_every_part_with_its_ablation(server):
    report = run_eval(
        server, "conversation", "--trials", "2", "--distance", "40", "--passkey-distance", "30",
        "--stream-tokens", "400", "--reply-tokens", "4", "--json",
    )  # fmt: skip
    assert set(report["facts"]) == {"name", "city", "number"}
    for numbers in [*report["facts"].values(), *report["passkey"].values(), report["document"]]:
        assert 0 <= numbers["accuracy"] <= 1 and 0 <= numbers["ablation_accuracy"] <= 1
    assert all(n["trials"] == 2 and n["mean_distance_tokens"] >= 40 for n in report["facts"].values())
    assert report["passkey"]["30"]["trials"] == 2 and report["document"]["trials"] == 2
    assert sum(n["trials"] for n in report["facts_by_distance"].values()) == 6
    assert report["ordinary"]["prompts"] == 50 and 0 <= report["ordinary"]["words_rate"] <= 1
    assert report["streamed_tokens"] >= 400 and report["stream"]["trials"] == 2
    assert report["model"] == "tiny-random"
    assert eval_sessions(server) == []  # every session it made is gone
