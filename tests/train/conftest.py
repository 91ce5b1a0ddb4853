"""Shared by the training tests: a small generated corpus, a tiny model, and the `titans` command."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest

from titans_core.train import TrainOptions

_WORDS = """the king queen sword crown night day love death honour blood heart friend enemy lord lady
speak hear see come go stay fly fight sleep dream wake fair foul sweet bitter old young noble gentle
cruel true false heaven earth sea fire storm tower castle field garden river morning"""
WORDS = _WORDS.split()

TINY_MODEL = dict(
    d_model=32,
    n_layers=2,
    n_heads=2,
    mem_heads=2,
    n_persistent=2,
    mem_layers=1,
    chunk_size=16,
    segment_size=32,
    window=32,
)


def write_corpus(folder: Path, documents: int = 4, lines: int = 150, seed: int = 0) -> Path:
    """Play-like text: speaker names and lines of words, a few kB per document."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(documents):
        text = []
        for _ in range(lines):
            speaker = rng.choice(["Ham.", "Hor.", "Oph.", "King.", "Queen."])
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
            text.append(f"{speaker}\n{words[0].upper()}{words[1:]}{rng.choice('.,!?;')}\n")
        (folder / f"play_{d}.txt").write_text("\n".join(text))
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "plays")


def tiny_options(corpus: Path, out: Path, **overrides) -> TrainOptions:
    """A run that takes about a second: byte tokenizer, a 2-layer model, 256-token sequences."""
    settings = dict(
        data=[str(corpus)],
        out=str(out),
        tokenizer="byte",
        model=TINY_MODEL,
        seq_len=256,
        batch_size=2,
        steps=6,
        warmup=2,
        lr=3e-3,
        min_lr=3e-4,
        eval_every=0,
        eval_sequences=2,
        eval_recall=4,
        eval_distances=[8, 100],
        save_every=0,
        log_every=1,
        threads=1,
        progress="lines",
    )
    return TrainOptions(**(settings | overrides))


def titans_command() -> list[str]:
    """The installed `titans` script (what users run); the same app through Python if it is absent."""
    script = shutil.which("titans", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from titans_client.cli import app; sys.exit(app())"]


def tiny_cli_args(corpus: Path, out: Path) -> list[str]:
    args = ["train", str(corpus), "--out", str(out), "--tokenizer", "byte", "--seq-len", "256"]
    for key, value in TINY_MODEL.items():
        args += ["--set", f"{key}={value}"]
    args += ["--warmup", "2", "--eval-every", "0", "--eval-sequences", "2", "--eval-recall", "4"]
    args += ["--eval-distance", "8", "--eval-distance", "100", "--log-every", "1", "--threads", "1"]
    return args + ["--progress", "lines"]
