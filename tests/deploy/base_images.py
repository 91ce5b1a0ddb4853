"""Base images made from Debian's packages, for machines that cannot pull from an image registry.

``python tests/deploy/base_images.py`` makes them when missing. The Python base is a debootstrapped
Debian bookworm (CPython 3.11, the Python of torch's CPU wheel on this machine's disk); the Redis
image is that base with Debian's redis-server. Each is built only when ``docker image inspect``
does not find it by name, a name tagged by its recipe's hash, so repeated runs on one machine cost
nothing and a changed recipe never meets a stale image.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = "python3,python3-venv,ca-certificates,python-is-python3"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def tagged(name: str, recipe: str) -> str:
    """``name`` tagged by its recipe's hash: a changed recipe makes a new image, never a stale one."""
    return f"{name}:bookworm-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


PYTHON_BASE = tagged("titans-test/debian-python", PACKAGES)

# Like the official image: AOF and data in /data, and no protected mode (which refuses clients
# from other containers when no password is set), since compose's network is the boundary.
REDIS_DOCKERFILE = f"""\
FROM {PYTHON_BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \\
    && apt-get clean && rm -rf /var/lib/apt/lists/* \\
    && printf '#!/bin/sh\\nexec "$@" --protected-mode no\\n' > /usr/local/bin/redis-entrypoint \\
    && chmod +x /usr/local/bin/redis-entrypoint
WORKDIR /data
ENTRYPOINT ["redis-entrypoint"]
CMD ["redis-server"]
"""
REDIS_IMAGE = tagged("titans-test/debian-redis", REDIS_DOCKERFILE)


def exists(image: str) -> bool:
    """Whether the engine holds ``image`` by that name."""
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt uses here (its sources), so debootstrap fetches from where apt can."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        text = path.read_text() if path.is_file() else ""
        for uri in re.findall(r"^URIs:\s*(\S+)|^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE):
            url = next(u for u in uri if u)
            if url.rstrip("/").endswith("/debian"):
                return url
    return DEFAULT_MIRROR


def make_python_base() -> None:
    """debootstrap a minimal bookworm with Python into a folder and import it as an image."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise SystemExit("debootstrap is missing: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="titans-rootfs-") as root:
        subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={PACKAGES}", "bookworm", root, debian_mirror()],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(Path(root, cache))
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = ["docker", "import", "--change", 'CMD ["python3"]', "-", PYTHON_BASE]
        subprocess.run(imported, stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrapped root failed")


def make_redis_image() -> None:
    """The Python base with Debian's redis-server, its working folder /data (where AOF goes)."""
    subprocess.run(
        ["docker", "build", "--network", "host", "-t", REDIS_IMAGE, "-"],
        input=REDIS_DOCKERFILE.encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def ensure() -> None:
    """Both images, each made only where the engine does not have it yet."""
    if not exists(PYTHON_BASE):
        make_python_base()
    if not exists(REDIS_IMAGE):
        make_redis_image()


if __name__ == "__main__":
    ensure()
    print(PYTHON_BASE, REDIS_IMAGE, file=sys.stderr)
