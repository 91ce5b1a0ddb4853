"""What a run reports: a tqdm bar on a terminal or one line per report otherwise (a log file under
``nohup``), and every report as a JSON line in ``metrics.jsonl``. Only rank 0 reports."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    def __init__(self, out: Path, start: int, total: int, enabled: bool, mode: str = "auto"):
        self.enabled, self.total = enabled, total
        self.metrics = out / "metrics.jsonl"
        bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        if enabled and bar:
            from tqdm import tqdm  # the `train` extra; the rest of titans_core.train needs only the core

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def record(self, record: dict[str, Any]) -> None:
        """Append ``record`` (with a timestamp) to metrics.jsonl."""
        if self.enabled:
            with self.metrics.open("a") as file:
                file.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def advance(self, steps: int, postfix: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
