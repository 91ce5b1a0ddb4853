"""``titans eval``: the recall and ingest-loss evaluations, run through the API of a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from titans_client.client import TitansClient
from titans_client.conversation_eval import Trial, _report

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
    results = report["results"]
    assert len(results) == 3 and len({r["passkey"] for r in results}) == 3
    assert all(r["passkey"].isdigit() for r in results)
    assert report["accuracy"] == sum(r["passkey"] in r["reply"] for r in results) / 3
    assert report["ablation_accuracy"] == sum(r["passkey"] in r["ablation_reply"] for r in results) / 3
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
    assert eval_sessions(server) == []
    # The same halves fed by hand: the report's losses are the server's, not its own arithmetic.
    text = document.read_text()
    middle = report["first_half_tokens"]  # tiny-random's tokenizer is one token per byte (ASCII here)
    with TitansClient(server.url) as client:
        client.ingest("by-hand-remembered", text[:middle])
        remembered = client.ingest("by-hand-remembered", text[middle:]).mean_loss
        fresh = client.ingest("by-hand-fresh", text[middle:]).mean_loss
        for session in ("by-hand-remembered", "by-hand-fresh"):
            client.delete_session(session)
    assert report["loss_after_first_half"] == pytest.approx(remembered, rel=1e-6)
    assert report["loss_fresh"] == pytest.approx(fresh, rel=1e-6)
    assert report["gap"] == pytest.approx(fresh - remembered, rel=1e-6)


def test_the_report_scores_trials_by_the_value_in_the_reply():
    trials = [
        Trial("facts", "name", "Ada", "Your name is Ada.", "Your name is Bob.", 600),
        Trial("facts", "name", "Lin", "I do not know.", "Lin, I think.", 700),
        Trial("facts", "city", "Oslo", "You live in Oslo.", None, 520),
        Trial("ordinary", "ordinary", "How are you?", "I am well, thank you.", None, 0),
        Trial("ordinary", "ordinary", "Count to three.", "1 2 3.", None, 0),
    ]
    report = _report(trials)
    assert report["facts"]["name"]["accuracy"] == 0.5 and report["facts"]["name"]["ablation_accuracy"] == 0.5
    assert report["facts"]["city"] == {
        "accuracy": 1.0,
        "trials": 1,
        "ablation_accuracy": 0.0,
        "mean_distance_tokens": 520.0,
        "examples": [{"value": "Oslo", "reply": "You live in Oslo.", "ablation_reply": None}],
    }
    assert report["facts_by_distance"][">=512"]["trials"] == 3
    assert report["ordinary"]["words_rate"] == 0.5
    assert report["ordinary"]["not_words"] == [{"prompt": "Count to three.", "reply": "1 2 3."}]


def test_conversation_reports_every_part_with_its_ablation(server):
    report = run_eval(
        server, "conversation", "--trials", "2", "--distance", "40", "--passkey-distance", "30",
        "--stream-tokens", "400", "--reply-tokens", "4", "--json",
    )  # fmt: skip
    assert set(report["facts"]) == {"name", "city", "number"}
    for numbers in [*report["facts"].values(), *report["passkey"].values(), report["document"]]:
        examples = numbers["examples"]  # every trial, at 2 trials
        assert len(examples) == numbers["trials"] == 2
        assert numbers["accuracy"] == sum(e["value"] in e["reply"] for e in examples) / 2
        assert numbers["ablation_accuracy"] == sum(e["value"] in e["ablation_reply"] for e in examples) / 2
    assert all(n["trials"] == 2 and n["mean_distance_tokens"] >= 40 for n in report["facts"].values())
    assert report["passkey"]["30"]["trials"] == 2 and report["document"]["trials"] == 2
    assert sum(n["trials"] for n in report["facts_by_distance"].values()) == 6
    ordinary = report["ordinary"]
    assert ordinary["prompts"] == 50 and ordinary["words_rate"] == (50 - len(ordinary["not_words"])) / 50
    assert report["streamed_tokens"] >= 400 and report["stream"]["trials"] == 2
    assert report["model"] == "tiny-random"
    assert eval_sessions(server) == []  # every session it made is gone
