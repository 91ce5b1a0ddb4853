"""Everything a training run is told, in one object: :class:`TrainOptions`."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from titans_core.config import TitansConfig
from titans_core.train import dialogue, drill, recall

KINDS = recall.KINDS + dialogue.KINDS + drill.KINDS

# Options that only change how a run is watched or paced, not what it computes: a resumed run may
# give them new values. Every other option must match the run being resumed.
RUNTIME_FIELDS = frozenset(
    {
        "out",
        "resume",
        "stop_after",
        "threads",
        "workers",
        "device",
        "log_every",
        "eval_every",
        "eval_sequences",
        "eval_recall",
        "eval_distances",
        "save_every",
        "save_minutes",
        "keep",
        "progress",
    }
)


@dataclass
class TrainOptions:
    """A training run. ``data`` are text files or folders; ``out`` the run's folder, which gets
    ``tokenizer.json``, ``options.json``, ``metrics.jsonl``, ``checkpoints/step-N/`` and, at the
    end, ``final/`` (``config.json``, ``model.safetensors``, ``tokenizer.json``)."""

    data: list[str]
    out: str
    # tokenizer: a tokenizer.json to reuse, "byte" for the byte-level one, None to train a BPE
    tokenizer: str | None = None
    vocab_size: int = 4096
    # start from this model's weights (a save_pretrained folder or a shipped name), e.g. the export
    # of a shorter-sequence stage; None: a random init. Its config and tokenizer are the run's
    # (``model`` fields given must agree with its config; ``tokenizer`` given replaces its own).
    init: str | None = None
    # TitansConfig fields; vocab_size defaults to the tokenizer's size rounded up to a multiple of 64
    model: dict[str, Any] = field(default_factory=dict)
    seq_len: int = 2048  # tokens per training sequence (trained through the state across segments)
    batch_size: int = 4  # sequences per rank per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    steps: int = 2000
    lr: float = 2e-3
    min_lr: float = 2e-4  # the cosine schedule ends here
    warmup: int = 100  # steps of linear warmup from 0
    weight_decay: float = 0.1  # on the weights of linear layers and the embedding
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0  # the gradient norm is clipped to this (0: no clipping)
    recall_fraction: float = 0.5  # share of sequences that are recall tasks
    recall_kinds: list[str] = field(default_factory=lambda: list(recall.KINDS))
    min_distance: int = 16  # recall distances, log-uniform; None: as far as seq_len allows
    max_distance: int | None = None
    # loss weight of each answer token relative to a text token: a few answer tokens against thousands
    # of text tokens in a sequence need a large weight to be learnt in a short run
    answer_weight: float = 50.0
    # a curriculum stage's gate: the run ends (and exports) once the teacher-forced whole-answer
    # accuracy of ``gate_reports`` log windows in a row reaches ``gate_accuracy``; ``steps`` is the
    # stage's cap, where it ends anyway and says the gate stayed shut. None: no gate.
    gate_accuracy: float | None = None
    gate_reports: int = 3
    # the memories' gates (inner learning rate, momentum, forgetting) learn at lr * gate_lr_scale:
    # at the shared rate they barely move (issue 25)
    gate_lr_scale: float = 1.0
    val_fraction: float = 0.02  # held-out tail of the token stream
    seed: int = 0
    # runtime (see RUNTIME_FIELDS)
    eval_every: int = 200  # steps between evaluations (0: only at the end)
    eval_sequences: int = 8  # held-out sequences of seq_len tokens per evaluation
    eval_recall: int = 32  # passkey trials per distance per evaluation
    eval_distances: list[int] = field(default_factory=lambda: [64, 1024])
    save_every: int = 200  # steps between checkpoints (0: none by steps)
    save_minutes: float = 0.0  # also save when this many minutes passed since the last (0: off)
    keep: int = 2  # checkpoints kept (the newest)
    log_every: int = 10
    threads: int | None = None  # torch.set_num_threads
    workers: int = 0  # processes that build batches ahead of the step (0: the training process)
    device: str = "auto"  # auto (cuda if present), cpu, cuda
    resume: bool = False  # continue from the newest checkpoint in out (start fresh if none)
    stop_after: int | None = None  # stop this invocation after so many steps (resume later)
    progress: str = "auto"  # auto (a bar on a terminal, log lines otherwise), bar, lines

    def __post_init__(self) -> None:
        if isinstance(self.data, str | Path):
            self.data = [self.data]
        self.data = [str(Path(p).resolve()) for p in self.data]
        self.out = str(self.out)
        self.model = dict(self.model)
        self.recall_kinds = list(self.recall_kinds)
        self.eval_distances = list(self.eval_distances)
        if not self.data:
            raise ValueError("data: give at least one text file or folder")
        positive = ("vocab_size", "seq_len", "batch_size", "grad_accum", "steps", "log_every", "keep")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup", "eval_every", "eval_sequences", "eval_recall", "save_every", "min_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "clip", "answer_weight", "save_minutes"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("recall_fraction", "val_fraction", "beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < 1 + (name == "recall_fraction"):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.gate_accuracy is not None and not 0 < self.gate_accuracy <= 1:
            raise ValueError(f"gate_accuracy must be in (0, 1] or None, got {self.gate_accuracy!r}")
        if (
            isinstance(self.gate_reports, bool)
            or not isinstance(self.gate_reports, int)
            or self.gate_reports < 1
        ):
            raise ValueError(f"gate_reports must be a positive integer, got {self.gate_reports!r}")
        if not isinstance(self.gate_lr_scale, int | float) or not 0 < self.gate_lr_scale < math.inf:
            raise ValueError(f"gate_lr_scale must be a positive finite number, got {self.gate_lr_scale!r}")
        if self.max_distance is not None and self.max_distance < self.min_distance:
            raise ValueError(f"max_distance {self.max_distance} is below min_distance {self.min_distance}")
        unknown = sorted(set(self.recall_kinds) - set(KINDS))
        if unknown or not self.recall_kinds:
            raise ValueError(f"recall_kinds must be some of {', '.join(KINDS)}, got {self.recall_kinds}")
        if any(d < 0 for d in self.eval_distances):
            raise ValueError(f"eval_distances must be >= 0, got {self.eval_distances}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be a positive integer, got {self.stop_after!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {self.workers!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.progress not in ("auto", "bar", "lines"):
            raise ValueError(f"progress must be auto, bar or lines, got {self.progress!r}")
        config_fields = {f.name for f in dataclasses.fields(TitansConfig)}
        unknown = sorted(set(self.model) - config_fields)
        if unknown:
            raise ValueError(f"unknown model field(s): {', '.join(unknown)}")
        if self.val_fraction == 0 and self.eval_sequences:
            raise ValueError("eval_sequences needs held-out text: val_fraction must be above 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)

    def differences(self, other: TrainOptions) -> list[str]:
        """The options (other than runtime ones) whose values differ: why a resume is refused."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{name}: {theirs[name]!r} in the run, {mine[name]!r} now"
            for name in sorted(mine)
            if name not in RUNTIME_FIELDS and mine[name] != theirs[name]
        ]
