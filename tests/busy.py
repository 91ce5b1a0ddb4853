"""Run the test suite while other processes keep every core busy: CI's shared machine, on purpose.

    python tests/busy.py                 # the whole suite twice, under load
    python tests/busy.py --runs 1 tests/server -x

One spinning process per core (pure Python arithmetic, niced so it competes like another job on a
shared machine would) runs for the whole time; each run's exit code and wall time are printed, and
the exit code is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def spin() -> None:
    os.nice(5)  # like another tenant's job: it takes its share, the tests are not starved outright
    value = 0
    while True:
        value = (value * 31 + 7) % 1_000_003


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="how many times to run the suite")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="spinning processes")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (default: the whole suite)")
    options = parser.parse_args()
    load = [multiprocessing.Process(target=spin, daemon=True) for _ in range(options.load)]
    for process in load:
        process.start()
    failed = False
    try:
        for run in range(1, options.runs + 1):
            began = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", *options.pytest_args])
            minutes = (time.monotonic() - began) / 60
            print(f"busy run {run}/{options.runs}: exit {done.returncode} in {minutes:.1f} min", flush=True)
            failed |= done.returncode != 0
    finally:
        for process in load:
            process.terminate()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
