"""Shared by every test: a fresh random seed each, and real titans-server processes on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from servers import Server


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Fresh random inputs on every run; a failure report names the seed that reproduces it."""
    seed = int.from_bytes(os.urandom(4), "little") % 2**31
    torch.manual_seed(seed)
    request.node.user_properties.append(("torch_seed", seed))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        seed = dict(item.user_properties).get("torch_seed")
        report.sections.append(("random seed", f"torch.manual_seed({seed}) reproduces this run"))
    return report


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    running = Server(tmp_path_factory.mktemp("titans") / "data").start()
    yield running
    running.stop()


@pytest.fixture
def start_server(tmp_path):
    """``start_server(data_dir, *flags, command=..., env=..., cwd=...)``: another server process (see
    ``Server``), stopped after the test."""
    started: list[Server] = []

    def start(data_dir: Path | None = None, *args: str, **options) -> Server:
        started.append(Server(data_dir or tmp_path / "data", *args, **options).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()
