"""Evaluation during training: loss on held-out text, and passkey recall at fixed distances.

Both use fixed inputs (the same at every evaluation, on any number of ranks), sharded over ranks
and summed. Recall is scored as the server would: the document from position 0, the question,
and the greedy reply must be exactly the passkey and ``<|end|>`` (teacher-forced argmax at every
answer position, which is the same thing).
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor

from titans_core.model import TitansLM
from titans_core.tokenizer import Tokenizer
from titans_core.train.data import Batch
from titans_core.train.distributed import Distributed
from titans_core.train.recall import RecallLayout, Sample, make_task, recall_sample


def token_losses(model: TitansLM, batch: Batch) -> tuple[Tensor, Tensor]:
    """Cross-entropy ``[B, T]`` (float32) and the argmax predictions ``[B, T]``."""
    logits, _ = model(batch.inputs, logits="all")
    flat = logits.flatten(0, 1).float()
    losses = F.cross_entropy(flat, batch.targets.flatten(), reduction="none")
    return losses.view_as(batch.weights), logits.argmax(dim=-1)


class Evaluator:
    def __init__(
        self,
        val: Tensor,
        tokenizer: Tokenizer,
        seq_len: int,
        sequences: int,
        recall_trials: int,
        distances: list[int],
        seed: int,
        batch_size: int,
    ):
        self.batch_size = batch_size
        self.heldout: list[Sample] = []
        if sequences and len(val) >= seq_len + 1:
            last = len(val) - seq_len - 1
            starts = sorted({round(last * i / max(1, sequences - 1)) for i in range(sequences)})
            for start in starts:
                self.heldout.append(Sample(val[start : start + seq_len + 1].tolist(), [1.0] * seq_len))
        self.recall: dict[int, list[Sample]] = {}
        for distance in distances if recall_trials and len(val) else []:
            rng = random.Random(f"eval:{seed}:{distance}")
            samples = []
            for _ in range(recall_trials):
                layout = RecallLayout.of(make_task(rng, "passkey"), tokenizer)
                start = rng.randrange(len(val))
                filler = val.roll(-start)[:distance]
                while len(filler) < distance:  # held-out text shorter than the distance: go round
                    filler = torch.cat([filler, val])[:distance]
                samples.append(recall_sample(layout, filler.tolist(), kind="passkey"))
            self.recall[distance] = samples

    @torch.no_grad()
    def __call__(self, model: TitansLM, dist: Distributed) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = model.embed.weight.device
        # per rank: [loss sum, tokens] for held-out text, then [correct, trials, answer loss, answer
        # tokens] per distance
        totals = torch.zeros(2 + 4 * len(self.recall), dtype=torch.float64)
        mine = self.heldout[dist.rank :: dist.world]
        for i in range(0, len(mine), self.batch_size):
            batch = Batch.of(mine[i : i + self.batch_size]).to(device)
            losses, _ = token_losses(model, batch)
            totals[0] += losses.sum().item()
            totals[1] += losses.numel()
        for slot, samples in enumerate(self.recall.values()):
            by_length: dict[int, list[Sample]] = defaultdict(list)
            for sample in samples[dist.rank :: dist.world]:
                by_length[len(sample.tokens)].append(sample)
            for group in by_length.values():
                for i in range(0, len(group), self.batch_size):
                    batch = Batch.of(group[i : i + self.batch_size]).to(device)
                    losses, predicted = token_losses(model, batch)
                    right = (predicted == batch.targets) | ~batch.answers
                    base = 2 + 4 * slot
                    totals[base] += right.all(dim=1).sum().item()
                    totals[base + 1] += len(batch.inputs)
                    totals[base + 2] += losses[batch.answers].sum().item()
                    totals[base + 3] += batch.answers.sum().item()
        totals = dist.sum(totals)
        model.train(was_training)
        metrics = {}
        if totals[1]:
            metrics["val_loss"] = float(totals[0] / totals[1])
        for slot, distance in enumerate(self.recall):
            correct, trials, loss, count = totals[2 + 4 * slot : 6 + 4 * slot].tolist()
            metrics[f"recall@{distance}"] = correct / max(trials, 1)
            metrics[f"recall_loss@{distance}"] = loss / max(count, 1)
        return metrics
