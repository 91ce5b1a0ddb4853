"""Titans models and their neural long-term memory: the library under Titans Serve (no web code)."""

from titans_core.config import TitansConfig
from titans_core.generation import Generation, SamplingParams, generate
from titans_core.memory import MemoryState, NeuralMemory
from titans_core.model import TitansLM
from titans_core.state import LayerState, ModelState, StateMismatchError
from titans_core.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "Generation",
    "LayerState",
    "MemoryState",
    "ModelState",
    "NeuralMemory",
    "SamplingParams",
    "StateMismatchError",
    "TitansConfig",
    "TitansLM",
    "Tokenizer",
    "generate",
]
