"""The build context the deploy tests give Docker, and the build arguments for this machine.

The context is the checkout as a fresh clone has it (git's tracked and not-ignored files), plus
the Dockerfile's ``wheels/`` folder filled for this machine: torch's wheel from pip's local
find-links folder (so no CUDA build and no unreachable index), and a ``pip.conf`` with the CA
bundle pip trusts here (TLS to the package index may be intercepted). The Dockerfile's defaults
stay as users get them: only build arguments and ``wheels/`` differ.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

from base_images import PYTHON_BASE

ROOT = Path(__file__).resolve().parents[2]
TORCH_VERSION = "2.13.0"


def pip_config() -> dict[str, str]:
    """pip's configuration here (``pip config list``), as ``{"global.cert": ..., ...}``."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    config = {}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        config[name.removeprefix(":env:")] = value.strip().strip("'\"")
    return config


def local_torch_wheel() -> Path | None:
    """torch's wheel for the base image's Python (bookworm's 3.11) in pip's find-links folders."""
    tag = "cp311"
    for folder in pip_config().get("global.find-links", "").split():
        for wheel in sorted(Path(folder).glob(f"torch-{TORCH_VERSION}*-{tag}-*.whl")):
            return wheel
    return None


def copy_checkout(destination: Path) -> None:
    """Every file a clone of the checkout would have, as it is now in the work tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not there
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def fill_wheels(wheels: Path) -> None:
    """torch's local wheel (a hard link where possible) and pip's CA bundle, named in a pip.conf."""
    wheels.mkdir(exist_ok=True)
    wheel = local_torch_wheel()
    if wheel is not None:
        try:
            os.link(wheel, wheels / wheel.name)
        except OSError:
            shutil.copy2(wheel, wheels / wheel.name)
    conf = configparser.ConfigParser()
    conf["global"] = {}
    cert = os.environ.get("PIP_CERT") or pip_config().get("global.cert")
    if cert and Path(cert).is_file():
        shutil.copy2(cert, wheels / "ca-bundle.crt")
        conf["global"]["cert"] = "/wheels/ca-bundle.crt"
    with open(wheels / "pip.conf", "w") as out:
        conf.write(out)


def make_context(destination: Path) -> Path:
    """A build context for this machine in ``destination`` (see the module's docstring)."""
    copy_checkout(destination)
    fill_wheels(destination / "wheels")
    return destination


def build_args() -> dict[str, str]:
    """The build arguments for this machine: the locally made Debian base for both stages, and
    torch from wheels/ (no index) where pip's folder has its wheel."""
    index = "" if local_torch_wheel() is not None else "https://download.pytorch.org/whl/cpu"
    return {"BUILDER_IMAGE": PYTHON_BASE, "RUNTIME_IMAGE": PYTHON_BASE, "TORCH_INDEX_URL": index}
