"""AdamW with decay on the weight matrices only, the memories' gates at a rate of their own, and
the learning rate at each step.

The schedule is a pure function of the step (linear warmup from 0, then a cosine to ``min_lr`` at
the last step), so resuming needs no scheduler state beyond the step itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from titans_core.memory import NeuralMemory
from titans_core.train.options import TrainOptions


def make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """Weight decay on linear layers' and the embedding's weights; none on norms, biases, gates'
    convolution taps, persistent tokens or the memories' initial weights."""
    decayed = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, nn.Linear | nn.Embedding) and module.weight.requires_grad
    }
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if id(p) in decayed], "weight_decay": options.weight_decay},
        {"params": [p for p in parameters if id(p) not in decayed], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=options.lr, betas=(options.beta1, options.beta2))


class GateRate:
    """The memories' gate rows learn at ``scale`` times the rate of the rest.

    Those rows share ``to_inputs`` with q, k and v, so no parameter group can hold them alone;
    instead each step's change of them is scaled by ``scale``: for AdamW exactly a learning rate
    ``scale`` times larger (weight decay included), with the moments kept as they are.
    """

    def __init__(self, model: nn.Module, scale: float):
        self.scale = scale
        self.rows = [
            (parameter, module.gate_rows())
            for module in model.modules()
            if isinstance(module, NeuralMemory)
            for parameter in (module.to_inputs.weight, module.to_inputs.bias)
        ]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, then the gate rows' change scaled."""
        if self.scale == 1:
            optimizer.step()
            return
        with torch.no_grad():
            before = [parameter[rows].clone() for parameter, rows in self.rows]
            optimizer.step()
            for (parameter, rows), old in zip(self.rows, before):
                parameter[rows] = torch.lerp(old, parameter[rows], self.scale)


def learning_rate(step: int, options: TrainOptions) -> float:
    """The rate for the optimizer step taken at ``step`` (0-based)."""
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    span = max(1, options.steps - options.warmup)
    progress = min(1.0, (step - options.warmup) / span)
    return options.min_lr + 0.5 * (options.lr - options.min_lr) * (1 + math.cos(math.pi * progress))
