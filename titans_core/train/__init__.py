"""Training Titans language models: corpus, tokenizer, recall tasks, the loop (``titans train``).

``train(TrainOptions(data=[...], out="runs/x"))`` reads text, trains (or reuses) a byte-level BPE
tokenizer, mixes packed language modelling with recall tasks that only the neural memory can
solve, and writes checkpoints and a ``save_pretrained`` export. See ``docs/training.md``.
"""

from titans_core.train.bpe import train_tokenizer
from titans_core.train.corpus import (
    SHAKESPEARE_CREDIT,
    extract_shakespeare,
    fetch_shakespeare,
    read_texts,
)
from titans_core.train.loop import TrainResult, train
from titans_core.train.options import TrainOptions
from titans_core.train.recall import (
    PASSKEY_QUESTION,
    passkey_document,
    passkey_messages,
    random_passkey,
)

__all__ = [
    "PASSKEY_QUESTION",
    "SHAKESPEARE_CREDIT",
    "TrainOptions",
    "TrainResult",
    "extract_shakespeare",
    "fetch_shakespeare",
    "passkey_document",
    "passkey_messages",
    "random_passkey",
    "read_texts",
    "train",
    "train_tokenizer",
]
