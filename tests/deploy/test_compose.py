"""``docker compose up -d --build`` with the project's docker-compose.yml, run by a real engine.

The override (compose.local.yml) only swaps the images this machine cannot pull and publishes
the port on loopback. The server talks to the Redis container; sessions survive ``restart titans``
and ``down`` + ``up``; with Redis stopped requests get 503 with Retry-After, and the server
recovers by itself once Redis is back.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from base_images import REDIS_IMAGE
from calls import chat, new_session, version
from compose_stack import Stack
from containers import anonymous_volumes, answers, docker, wait_for
from docker_build import build_args
from servers import free_port

OVERRIDE = Path(__file__).parent / "compose.local.yml"
MODEL = "default"  # the compose file sets no model: the image serves the shipped default


@pytest.fixture(scope="module")
def stack(build_context):
    """The project's stack, built and started; torn down with its volumes afterwards."""
    port = free_port()
    env = {**os.environ, **build_args(), "REDIS_IMAGE": REDIS_IMAGE, "TITANS_TEST_PORT": str(port)}
    project = "titans-deploy-test-" + os.urandom(3).hex()
    files = [build_context / "docker-compose.yml", OVERRIDE]
    compose = Stack(build_context, project, files, env, url=f"http://127.0.0.1:{port}")
    try:
        compose("up", "-d", "--build", timeout=1800)
        wait_for(lambda: answers(compose.url + "/ready"), "the server behind compose", timeout=240)
        yield compose
    finally:
        compose("down", "-v", "--timeout", "20")


def test_the_server_keeps_its_sessions_in_the_redis_container(stack):
    session = new_session()
    chat(stack.url, session, model=MODEL)
    keys = docker("exec", stack.container("redis"), "redis-cli", "--scan").stdout
    assert session in keys, keys[:2000]
    ready = httpx.get(stack.url + "/ready", timeout=10).json()
    assert ready["store"] is True


def test_sessions_survive_a_restart_and_down_then_up(stack):
    session = new_session()
    chat(stack.url, session, model=MODEL)
    stack("restart", "titans", timeout=180)
    wait_for(lambda: answers(stack.url + "/ready"), "the restarted server")
    assert version(stack.url, session) == 1
    left_behind = anonymous_volumes(stack.container("titans"))  # its /data, unused with Redis
    stack("down", timeout=180)  # containers and network gone, volumes kept
    for volume in left_behind:
        docker("volume", "rm", volume)
    stack("up", "-d", timeout=600)
    wait_for(lambda: answers(stack.url + "/ready"), "the server after down and up")
    assert version(stack.url, session) == 1
    chat(stack.url, session, model=MODEL)
    assert version(stack.url, session) == 2


def test_redis_stopped_is_503_with_retry_after_and_the_server_recovers(stack):
    session = new_session()
    chat(stack.url, session, model=MODEL)
    titans = stack.container("titans")
    started = docker("inspect", "--format", "{{.State.StartedAt}}", titans).stdout
    stack("stop", "redis", timeout=120)
    refused = httpx.get(f"{stack.url}/v1/sessions/{session}", timeout=60)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    stack("start", "redis", timeout=120)
    wait_for(
        lambda: httpx.get(f"{stack.url}/v1/sessions/{session}", timeout=30).status_code == 200,
        "the server to reach Redis again",
    )
    chat(stack.url, session, model=MODEL)
    assert version(stack.url, session) == 2
    # by itself: the same server process, never restarted
    assert docker("inspect", "--format", "{{.State.StartedAt}}", titans).stdout == started
