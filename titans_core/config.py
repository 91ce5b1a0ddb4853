"""The model configuration: the seed's field names, validated, with a JSON form and a stable hash."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from titans_core.ops.chunked_memory import check_max_surprise

Variant = Literal["MAC", "MAG", "MAL", "LMM"]
VARIANTS = ("MAC", "MAG", "MAL", "LMM")
MODEL_TYPE = "titans"  # Transformers' name for this architecture (``titans_core.hf`` registers it)
# What Transformers writes into a config.json beside a model's own fields: bookkeeping and generation
# switches, none of which changes the model's maths, so they are read past (and never fingerprinted).
TRANSFORMERS_FIELDS = frozenset(
    {
        "model_type",
        "architectures",
        "auto_map",
        "dtype",
        "torch_dtype",
        "transformers_version",
        "use_cache",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "is_encoder_decoder",
        "chunk_size_feed_forward",
        "problem_type",
        "id2label",
        "label2id",
        "_name_or_path",
    }
)


@dataclass(frozen=True)
class TitansConfig:
    """Every size and switch of a :class:`titans_core.TitansLM`; the defaults make a ~5M-parameter MAC.

    ``segment_size`` is MAC's attention span (segments aligned to absolute positions); ``window`` is
    the sliding attention window of MAG and MAL (a token sees itself and ``window - 1`` before it).
    The neural memory has ``mem_heads`` heads of ``d_model // mem_heads`` features, ``mem_layers``
    MLP layers with hidden size ``mem_expansion`` times that, and updates in chunks of ``chunk_size``.
    ``n_persistent`` learned key/value pairs are visible to every attention query.
    """

    variant: Variant = "MAC"
    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    mem_layers: int = 2
    mem_heads: int = 4
    mem_expansion: int = 4
    n_persistent: int = 16
    chunk_size: int = 64
    segment_size: int = 256
    window: int = 256
    use_momentum: bool = True
    use_decay: bool = True
    ffn_expansion: int = 4
    max_lr: float = 0.1
    # the divergence guard: no token's memory gradient is longer than this (None: unguarded)
    max_surprise: float | None = 10.0
    conv_kernel: int = 4
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        for name in (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "mem_layers",
            "mem_heads",
            "mem_expansion",
            "chunk_size",
            "segment_size",
            "window",
            "ffn_expansion",
            "conv_kernel",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if (
            isinstance(self.n_persistent, bool)
            or not isinstance(self.n_persistent, int)
            or self.n_persistent < 0
        ):
            raise ValueError(f"n_persistent must be a non-negative integer, got {self.n_persistent!r}")
        for name in ("use_momentum", "use_decay"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("max_lr", "rope_base", "norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        check_max_surprise(self.max_surprise)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model / n_heads ({self.d_model // self.n_heads}) must be even for RoPE")
        if self.d_model % self.mem_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by mem_heads ({self.mem_heads})")
        if self.variant == "MAC" and self.segment_size % self.chunk_size:
            raise ValueError(
                f"segment_size ({self.segment_size}) must be a multiple of chunk_size ({self.chunk_size})"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config.json text; ``model_type`` lets Transformers' Auto classes recognise it."""
        return json.dumps({"model_type": MODEL_TYPE, **self.to_dict()}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TitansConfig:
        """Unknown fields are an error: a typo must not silently fall back to a default. The fields
        Transformers adds (:data:`TRANSFORMERS_FIELDS`) are read past, so a Hugging Face checkpoint
        loads and its states keep their fingerprint; another architecture's config is refused."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a JSON object, got {type(data).__name__}")
        if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}, got {data['model_type']!r}")
        own = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - own - TRANSFORMERS_FIELDS)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**{name: value for name, value in data.items() if name in own})

    @classmethod
    def from_json(cls, text: str) -> TitansConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config is not valid JSON: {error}") from error
        return cls.from_dict(data)

    @functools.cache  # noqa: B019 (a frozen config: one entry per config, and every step checks it)
    def fingerprint(self) -> str:
        """A short hash of every field: states carry it so one model never loads another's memory."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
