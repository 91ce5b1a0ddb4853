"""``TitansLM``: a stack of Titans blocks over tied token embeddings, streaming through its state.

``logits, state = model(tokens, state)`` continues a stream exactly: one call over a sequence, calls
over its pieces, or one token at a time give the same logits and state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from titans_core._validation import describe
from titans_core.attention import rotary_table
from titans_core.blocks import BLOCKS
from titans_core.config import TitansConfig
from titans_core.memory import WriteLog
from titans_core.state import ModelState, state_shapes
from titans_core.tokenizer import TOKENIZER_FILE, Tokenizer

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
SHIPPED = Path(__file__).parent / "pretrained"  # trained checkpoints inside the package, by name


def shipped(name: str | Path) -> Path | None:
    """The directory of the shipped checkpoint called ``name`` (a bare name), if it is installed."""
    name = str(name)
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        return None
    directory = SHIPPED / name
    return directory if (directory / CONFIG_FILE).is_file() else None


# Named models that need no files. tiny-random is for tests and development: seeded random weights.
PRESETS: dict[str, tuple[TitansConfig, int]] = {
    "tiny-random": (
        TitansConfig(
            variant="MAC",
            vocab_size=264,
            d_model=64,
            n_layers=2,
            n_heads=2,
            mem_heads=2,
            n_persistent=4,
            chunk_size=16,
            segment_size=32,
            window=32,
        ),
        0,
    ),
}


class TitansLM(nn.Module):
    """A Titans language model (``config.variant``: MAC, MAG, MAL or LMM) and its tokenizer."""

    piece_tokens = 4096  # long inputs go through in pieces of this many tokens: bounded activations

    def __init__(self, config: TitansConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        tokenizer = tokenizer or Tokenizer.byte_level()
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but vocab_size is {config.vocab_size}"
            )
        self.config, self.tokenizer = config, tokenizer
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.layers = nn.ModuleList(BLOCKS[config.variant](config) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> ModelState:
        """A fresh session: the learned initial memories, empty caches, position 0."""
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        layers = [layer.initial_state(batch_size, device, dtype) for layer in self.layers]
        return ModelState(layers, 0, self.config.fingerprint())

    def forward(
        self,
        tokens: Tensor,
        state: ModelState | None = None,
        *,
        logits: Literal["all", "last", "none"] = "all",
    ) -> tuple[Tensor | None, ModelState]:
        """Consume ``tokens`` ``[B, T]`` (int64) after ``state``; returns logits and the new state.

        ``logits`` picks what to compute: every position ``[B, T, V]``, the last ``[B, 1, V]``, or
        none (ingestion: a long document's logits would dwarf everything else).
        """
        if logits not in ("all", "last", "none"):
            raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        self._check_tokens(tokens)
        if state is None:
            state = self.initial_state(tokens.shape[0])
        else:
            self._check_state(state, tokens.shape[0])
        if tokens.shape[1] == 0:
            return (None if logits == "none" else self._empty_logits(tokens)), state
        outputs = []
        for piece in tokens.split(self.piece_tokens, dim=1):
            hidden, state = self._forward_piece(piece, state)
            if logits == "all":
                outputs.append(self._logits(hidden))
        if logits == "none":
            return None, state
        if logits == "last":
            return self._logits(hidden[:, -1:]), state
        return torch.cat(outputs, dim=1), state

    def hidden_states(self, tokens: Tensor, state: ModelState | None = None) -> tuple[Tensor, ModelState]:
        """The final normalised hidden states ``[B, T, d_model]`` of ``tokens`` after ``state``: what
        :meth:`forward` multiplies by the tied embedding. Training takes its loss from these, so
        the logits of a whole batch never need to exist at once."""
        self._check_tokens(tokens)
        if state is None:
            state = self.initial_state(tokens.shape[0])
        else:
            self._check_state(state, tokens.shape[0])
        pieces = []
        for piece in tokens.split(self.piece_tokens, dim=1):
            hidden, state = self._forward_piece(piece, state)
            pieces.append(hidden)
        if not pieces:
            return self.embed.weight.new_zeros(tokens.shape[0], 0, self.config.d_model), state
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)), state

    @contextmanager
    def recording_writes(self) -> Iterator[WriteLog]:
        """Within the block, every token fed has its write strength recorded: how much it moved the
        memory (the surprise it wrote), at the cost of a few reductions per chunk."""
        log = WriteLog(len(self.layers))
        for i, layer in enumerate(self.layers):
            layer.memory.on_write = log.recorder(i)
        try:
            yield log
        finally:
            for layer in self.layers:
                layer.memory.on_write = None

    def decode(self, tokens: Tensor, states: list[ModelState]) -> tuple[Tensor, list[ModelState]]:
        """One token for each of ``B`` sessions at positions of their own, as one batch.

        ``tokens`` ``[B]`` (int64); returns the next-token logits ``[B, V]`` and each session's new
        state: exactly what ``B`` calls of :meth:`forward` give. This is the engine's decode step.
        The new states share the batch's buffers (the next step reuses them); ``to_bytes`` or
        ``state.map(torch.clone)`` give a state of its own to keep.
        """
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or len(states) != len(tokens):
            raise ValueError(f"tokens must be a tensor [B] with one state each, got {describe(tokens)}")
        self._check_tokens(tokens.unsqueeze(1))
        for state in states:
            self._check_state(state, 1)
        positions = [state.position for state in states]
        x = self.embed(tokens.unsqueeze(1))
        config = self.config
        table = rotary_table(torch.tensor(positions).view(-1, 1, 1), config.head_dim, config.rope_base, x)
        per_layer = []
        for i, layer in enumerate(self.layers):
            x, layer_states = layer.decode(x, [state.layers[i] for state in states], positions, table)
            per_layer.append(layer_states)
        new_states = [
            ModelState([layers[row] for layers in per_layer], position + 1, self.config.fingerprint())
            for row, position in enumerate(positions)
        ]
        return self._logits(self.norm(x))[:, 0], new_states

    def _forward_piece(self, tokens: Tensor, state: ModelState) -> tuple[Tensor, ModelState]:
        x = self.embed(tokens)
        config = self.config
        positions = torch.arange(state.position, state.position + tokens.shape[1])
        table = rotary_table(positions, config.head_dim, config.rope_base, x)
        layers = []
        for layer, layer_state in zip(self.layers, state.layers):
            x, layer_state = layer(x, state.position, layer_state, table)
            layers.append(layer_state)
        return self.norm(x), ModelState(layers, state.position + tokens.shape[1], state.config_hash)

    def _logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.embed.weight)  # tied embeddings

    def _empty_logits(self, tokens: Tensor) -> Tensor:
        return self.embed.weight.new_zeros(tokens.shape[0], 0, self.config.vocab_size)

    def _check_tokens(self, tokens: Tensor) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 2:
            raise ValueError(f"tokens must be an int64 tensor [B, T], got {describe(tokens)}")
        if tokens.shape[0] < 1:
            raise ValueError("tokens must hold at least one sequence")
        if tokens.device != self.embed.weight.device:
            raise ValueError(f"tokens must be on {self.embed.weight.device}, got {describe(tokens)}")
        if tokens.numel() and ((tokens < 0) | (tokens >= self.config.vocab_size)).any():
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")

    def _check_state(self, state: ModelState, batch: int) -> None:
        """Refuse a state that would silently compute garbage: another model's, or malformed."""
        if not isinstance(state, ModelState):
            raise ValueError(f"state must be a ModelState, got {type(state).__name__}")
        if state.config_hash != self.config.fingerprint():
            raise ValueError(
                f"state is for the config {state.config_hash}, this model's is {self.config.fingerprint()}"
            )
        if not isinstance(state.position, int) or state.position < 0:
            raise ValueError(f"state position must be a non-negative integer, got {state.position!r}")
        expected = state_shapes(self.config, state.position, batch)
        tensors = state.named_tensors()
        found = {name: tuple(t.shape) for name, t in tensors.items()}
        if found != expected:
            wrong = sorted(set(found.items()) ^ set(expected.items()))[:4]
            raise ValueError(
                f"state does not fit a batch of {batch} at position {state.position}: {wrong} differ"
            )
        weight = self.embed.weight
        for name, tensor in tensors.items():
            if tensor.dtype != weight.dtype or tensor.device != weight.device:
                raise ValueError(f"state tensor {name} must be {weight.dtype} on {weight.device}")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(self.config.to_json() + "\n")
        weights = {name: t.detach().to("cpu").contiguous() for name, t in self.state_dict().items()}
        save_file(weights, directory / WEIGHTS_FILE, metadata={"format": "pt"})
        self.tokenizer.save(directory / TOKENIZER_FILE)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> TitansLM:
        """A preset (``tiny-random``), a shipped checkpoint (``default``, see :data:`SHIPPED`), or a
        directory written by :meth:`save_pretrained`."""
        name_or_path = shipped(name_or_path) or name_or_path
        if str(name_or_path) in PRESETS:
            config, seed = PRESETS[str(name_or_path)]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(config)
        directory = Path(name_or_path)
        files = [directory / name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{directory} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint: "
                f"missing {', '.join(missing)}"
            )
        try:
            config = TitansConfig.from_dict(json.loads(files[0].read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"{files[0]} is not valid JSON: {error}") from error
        model = cls(config, Tokenizer.from_file(files[2]))
        try:
            weights = load_file(files[1])
        except SafetensorError as error:
            raise ValueError(f"{files[1]} is not a valid safetensors file: {error}") from error
        expected = model.state_dict()
        missing = sorted(set(expected) - set(weights))
        extra = sorted(set(weights) - set(expected))
        misshaped = sorted(n for n in set(expected) & set(weights) if weights[n].shape != expected[n].shape)
        if missing or extra or misshaped:
            raise ValueError(
                f"{files[1]} does not fit {files[0]}: missing {missing or 'nothing'}, "
                f"unexpected {extra or 'nothing'}, mis-shaped {misshaped or 'nothing'}"
            )
        model.load_state_dict(weights)
        return model
