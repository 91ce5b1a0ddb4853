"""Take the README's screenshot of the playground, docs/playground.png.

    python scripts/playground_screenshot.py [--out docs/playground.png]

It runs the playground test that shows the shipped default model after a chat and an ingestion (a
real server, headless Chromium), telling it where to save the page; the test alone writes nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = (
    "tests/server/test_playground.py"
    "::test_the_readme_screenshot_shows_a_reply_and_a_plot_of_the_default_model"
)
VARIABLE = "TITANS_PLAYGROUND_SCREENSHOT"  # tests/server/test_playground.py reads it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "playground.png")
    out = parser.parse_args().out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    taken = out.with_name(f".{out.stem}.new{out.suffix}")  # the old picture stays unless a new one was taken
    taken.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
    ran = subprocess.run(command, cwd=ROOT, env={**os.environ, VARIABLE: str(taken)})
    if ran.returncode != 0 or not taken.exists():
        taken.unlink(missing_ok=True)
        print(f"no screenshot: the test failed or was skipped (exit {ran.returncode})", file=sys.stderr)
        return 1
    taken.replace(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
