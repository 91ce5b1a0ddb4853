"""Training as resumable stages: a curriculum whose stages advance on measured accuracy.

Each :class:`Stage` is one :func:`titans_core.train.train` run in ``out/<name>``, started from the
previous stage's export (``init``), ending when its gate opens (teacher-forced whole-answer
accuracy, :attr:`TrainOptions.gate_accuracy`) or at its step cap. :func:`run_stages` can be cut off
at any moment and called again: a stage with an export is done and skipped, a stage with
checkpoints continues from the newest (``resume``), and ``out/stages.json`` records what each
stage did (steps, tokens, time, whether its gate opened).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from titans_core.train.checkpoint import INFO_FILE
from titans_core.train.loop import FINAL_DIR, OPTIONS_FILE, train
from titans_core.train.options import TrainOptions

RECORD_FILE = "stages.json"


@dataclass
class Stage:
    """A stage's name and its :class:`TrainOptions` fields (``data``, ``out`` and ``init`` are set
    by :func:`run_stages`)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def run_stages(stages: list[Stage], data: list[str], out: Path, common: dict[str, Any]) -> list[dict]:
    """Run (or continue) ``stages`` in order under ``out``; returns each stage's record."""
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    init = common.get("init")
    for stage in stages:
        folder = out / stage.name
        export = folder / FINAL_DIR
        if not (export / INFO_FILE).is_file():
            options = TrainOptions(
                data=data,
                out=str(folder),
                resume=(folder / OPTIONS_FILE).is_file(),
                **(common | {"init": init} | stage.options),
            )
            result = train(options)
            if not result.finished:  # stopped by a signal: the next call continues it
                records.append({"stage": stage.name, "finished": False, "step": result.step})
                _write(out, records)
                return records
        records.append(_record(stage.name, export))
        _write(out, records)
        init = str(export)
    return records


def _record(name: str, export: Path) -> dict:
    info = json.loads((export / INFO_FILE).read_text())
    events = [json.loads(line) for line in (export.parent / "metrics.jsonl").read_text().splitlines()]
    gates = [e for e in events if e.get("event") == "gate"]
    return {
        "stage": name,
        "finished": True,
        "step": info["step"],
        "tokens": info["tokens"],
        "seconds": info["seconds"],
        "gate_open": gates[-1]["open"] if gates else None,
        "eval": info["eval"],
        "export": str(export),
    }


def _write(out: Path, records: list[dict]) -> None:
    (out / RECORD_FILE).write_text(json.dumps(records, indent=2) + "\n")
