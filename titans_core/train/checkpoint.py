"""Training checkpoints: loadable models that also carry what resuming needs.

``checkpoints/step-000200/`` holds what :meth:`TitansLM.save_pretrained` writes (so any checkpoint
serves or evaluates as it is) plus ``trainer.pt``: the optimizer's state, the step, the RNG state
and counters, as plain tensors and numbers (``torch.load(weights_only=True)``, nothing pickled
beyond that). A checkpoint is written to a temporary folder and renamed, so a crash never leaves a
half-written one; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from titans_core.model import WEIGHTS_FILE, TitansLM

TRAINER_FILE = "trainer.pt"
INFO_FILE = "training.json"
PATTERN = re.compile(r"step-(\d+)")


@dataclass
class Resumed:
    step: int
    tokens: int  # tokens trained on so far
    seconds: float  # training wall time so far
    path: Path
    eval: dict[str, float]  # the last evaluation before the checkpoint


def checkpoint_dirs(out: Path) -> list[Path]:
    """The complete checkpoints in ``out/checkpoints``, oldest first."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PATTERN.fullmatch(p.name) and (p / TRAINER_FILE).is_file()]
    return sorted(found, key=lambda p: int(PATTERN.fullmatch(p.name).group(1)))


def save_checkpoint(
    out: Path,
    model: TitansLM,
    optimizer: torch.optim.Optimizer,
    step: int,
    tokens: int,
    seconds: float,
    info: dict[str, Any],
    keep: int,
) -> Path:
    folder = out / "checkpoints"
    final = folder / f"step-{step:06d}"
    partial = folder / f".step-{step:06d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    trainer = {
        "step": step,
        "tokens": tokens,
        "seconds": seconds,
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        trainer["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(trainer, partial / TRAINER_FILE)
    (partial / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: TitansLM, optimizer: torch.optim.Optimizer) -> Resumed:
    """Restore ``model`` and ``optimizer`` (already built for the same config) from ``path``."""
    model.load_state_dict(load_file(path / WEIGHTS_FILE, device=str(model.embed.weight.device)))
    trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    torch.set_rng_state(trainer["rng"])
    if "cuda_rng" in trainer and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["cuda_rng"])
    info = json.loads((path / INFO_FILE).read_text()) if (path / INFO_FILE).is_file() else {}
    step, tokens, seconds = int(trainer["step"]), int(trainer["tokens"]), float(trainer["seconds"])
    return Resumed(step, tokens, seconds, path, dict(info.get("eval") or {}))
