"""The deploy tests' Docker image: built once a session from the project's Dockerfile."""

from __future__ import annotations

import time
from pathlib import Path

import base_images
import pytest
from containers import docker, engine_or_skip
from docker_build import build_args, make_context

IMAGE = "titans-serve:deploy-test"
FIGURES: list[str] = []  # what the build measured, for the run's summary


def pytest_terminal_summary(terminalreporter) -> None:
    """The image's build time and size at the end of the run, where they are read."""
    for line in FIGURES:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine, or the test is skipped (failed, under CI) with the reason."""
    engine_or_skip()


@pytest.fixture(scope="session")
def build_context(engine, tmp_path_factory) -> Path:
    """The checkout and this machine's wheels/ (see docker_build), with the base images made."""
    base_images.ensure()
    return make_context(tmp_path_factory.mktemp("context"))


@pytest.fixture(scope="session")
def image(build_context) -> str:
    """``docker build`` of the project's Dockerfile, as the README says, plus this machine's build
    arguments; its time and size go to the run's summary."""
    arguments = [item for name, value in build_args().items() for item in ("--build-arg", f"{name}={value}")]
    began = time.monotonic()
    docker("build", "--network", "host", "-t", IMAGE, *arguments, str(build_context), timeout=1800)
    seconds = time.monotonic() - began
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    FIGURES.append(f"docker build: {seconds:.0f} s, image {size / 1e6:.0f} MB")
    return IMAGE
