"""A model's own sampling defaults: ``generation_config.json`` beside its weights, as Hugging Face models
carry it (same field names, same meaning).

One definition serves both sides: Transformers reads the file for ``generate``, and the server
applies it to every sampling field a request leaves out (as vLLM does), while a request's explicit
values win. Fields absent from the file fall back to the server's own defaults (temperature 1,
top-p 1, no top-k), so a model that wants the two to sample alike spells out all four.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from titans_core.model import PRESETS, shipped

GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass(frozen=True)
class GenerationDefaults:
    """The fields of a ``generation_config.json`` the server applies (None: not in the file).

    ``do_sample`` false means greedy, whatever ``temperature`` says, as in Transformers.
    """

    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.do_sample is not None and not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be true or false, got {self.do_sample!r}")
        for name, low, high in (("temperature", 0, math.inf), ("top_p", 0, 1)):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
            ):
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if self.top_p == 0:
            raise ValueError("top_p must be above 0")
        for name, low in (("top_k", 0), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationDefaults:
        """The applied fields of a parsed file; the others (``eos_token_id``, ``transformers_version``
        and what Transformers alone uses) are left to Transformers."""
        if not isinstance(data, dict):
            raise ValueError(f"a generation config must be a JSON object, got {type(data).__name__}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def load(cls, directory: str | Path | None) -> GenerationDefaults:
        """The defaults in ``directory`` (none when it has no file, or for a preset: no directory)."""
        path = None if directory is None else Path(directory) / GENERATION_CONFIG_FILE
        if path is None or not path.is_file():
            return cls()
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The fields set, as the file has them (what ``/v1/models`` shows)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def apply(self, given: dict[str, Any]) -> dict[str, Any]:
        """``temperature``, ``top_p`` and ``top_k`` for a request that set ``given`` (only the fields
        it set): its values win, the rest come from these defaults where the file has them.
        ``do_sample`` false makes a request that sets no temperature greedy (temperature 0)."""
        model = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
        if self.do_sample is False:
            model["temperature"] = 0.0
        chosen = {name: value for name, value in model.items() if value is not None}
        chosen.update({name: value for name, value in given.items() if name in model})
        return chosen

    @classmethod
    def for_model(cls, name_or_path: str | Path) -> GenerationDefaults:
        """The defaults of the model ``TitansLM.from_pretrained(name_or_path)`` loads (a preset: none)."""
        directory = shipped(name_or_path) or (None if str(name_or_path) in PRESETS else Path(name_or_path))
        return cls.load(directory)
