"""``TitansHFConfig``: :class:`titans_core.TitansConfig` as a Transformers config, field for field."""

from __future__ import annotations

import dataclasses
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from titans_core.config import MODEL_TYPE, TitansConfig


@strict
class TitansHFConfig(PreTrainedConfig):
    """The same fields, names and defaults as :class:`TitansConfig` (a test keeps them in step);
    Transformers' generic names (``hidden_size``, ``num_hidden_layers``) are aliases of ours."""

    model_type = MODEL_TYPE
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
    }

    variant: str = "MAC"
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
    max_surprise: float | None = 10.0
    conv_kernel: int = 4
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.to_titans()  # the project's validation: a bad field fails here, not deep in the model

    def to_titans(self) -> TitansConfig:
        """The project's config: what the model is built from and states are fingerprinted by."""
        return TitansConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TitansConfig)})

    @classmethod
    def from_titans(cls, config: TitansConfig, **kwargs: Any) -> TitansHFConfig:
        return cls(**config.to_dict(), **kwargs)
