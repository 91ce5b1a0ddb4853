"""The training loop: :func:`train` runs a :class:`TrainOptions` from start (or a checkpoint) to the
exported model.

Each sequence of ``seq_len`` tokens goes through :class:`TitansLM` in one call from a fresh state,
so attention sees its segment or window while gradients flow back through the memory's updates
across the whole sequence: the model learns to write what later text will need. Under ``torchrun``
every rank trains its shard of each step's batch and ``DistributedDataParallel`` averages the
gradients; rank 0 alone writes checkpoints, logs and the export.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from titans_core.config import TitansConfig
from titans_core.model import TitansLM
from titans_core.tokenizer import TOKENIZER_FILE, Tokenizer
from titans_core.train.bpe import train_tokenizer
from titans_core.train.checkpoint import INFO_FILE, checkpoint_dirs, load_checkpoint, save_checkpoint
from titans_core.train.corpus import read_texts
from titans_core.train.data import Batch, SampleSource, TokenCorpus, shard
from titans_core.train.distributed import Distributed, parameter_digest
from titans_core.train.evaluate import Evaluator
from titans_core.train.loss import linear_cross_entropy
from titans_core.train.optim import GateRate, learning_rate, make_optimizer
from titans_core.train.options import TrainOptions
from titans_core.train.progress import Progress, duration

OPTIONS_FILE = "options.json"
MAX_SKIPPED = 5  # consecutive steps with non-finite gradients before a run gives up
FINAL_DIR = "final"


@dataclass
class TrainResult:
    step: int  # steps done in all
    tokens: int  # tokens trained on in all
    seconds: float  # training wall time in all (across resumes)
    finished: bool  # reached options.steps (and exported)
    export: Path | None  # the exported model (final/), if finished
    checkpoint: Path | None  # the newest checkpoint written by this call
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    digest: str = ""  # SHA-256 of the parameters (equal on every rank)


class WeightedLoss(nn.Module):
    """The model and its loss in one module, so ``DistributedDataParallel`` wraps one forward.

    Each sequence's loss is its weighted mean token cross-entropy; the batch's is the mean over
    sequences, so ranks with equal batch sizes average to exactly the global batch's loss.
    """

    def __init__(self, model: TitansLM):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, targets: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden, _ = self.model.hidden_states(inputs)
        losses, predicted = linear_cross_entropy(
            hidden.flatten(0, 1), self.model.embed.weight, targets.flatten()
        )
        losses = losses.view_as(weights)
        per_sequence = (losses * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-6)
        return per_sequence.mean(), losses.detach(), predicted.view_as(targets)


def train(options: TrainOptions) -> TrainResult:
    """Train as ``options`` say; returns where the run stands (see :class:`TrainResult`)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device_kind = options.device
    if device_kind == "auto":
        device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    dist = Distributed.from_env(device_kind)
    try:
        return _train(options, dist, device_kind)
    finally:
        dist.close()


def _train(options: TrainOptions, dist: Distributed, device_kind: str) -> TrainResult:
    device = torch.device(f"cuda:{dist.local_rank}" if device_kind == "cuda" else "cpu")
    if device_kind == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # TF32 matmuls: training does not need exact fp32
    out = Path(options.out)
    _check_run_folder(options, out)
    source = _init_source(options)  # checked before the folder is claimed: a bad --init leaves nothing
    dist.barrier()  # nobody reads out/ before rank 0 has checked and claimed it
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / OPTIONS_FILE).write_text(options.to_json() + "\n")
    documents = read_texts(options.data)
    tokenizer = _tokenizer(options, out, dist, [d.text for d in documents], source)
    corpus = TokenCorpus.of(documents, tokenizer, options.val_fraction)
    config = source.config if source else _config(options, tokenizer.vocab_size)
    torch.manual_seed(options.seed)
    model = TitansLM(config, tokenizer).to(device)
    optimizer = make_optimizer(model, options)
    gate_rate = GateRate(model, options.gate_lr_scale)
    checkpoints = checkpoint_dirs(out) if options.resume else []
    step, tokens, seconds_before = 0, 0, 0.0
    metrics: dict[str, float] = {}
    if checkpoints:
        resumed = load_checkpoint(checkpoints[-1], model, optimizer)
        step, tokens, seconds_before, metrics = resumed.step, resumed.tokens, resumed.seconds, resumed.eval
    elif source is not None:
        model.load_state_dict(source.state_dict())
    first_step = step
    samples = SampleSource(
        corpus.train,
        tokenizer,
        options.seq_len,
        options.seed,
        recall_fraction=options.recall_fraction,
        min_distance=options.min_distance,
        max_distance=options.max_distance,
        answer_weight=options.answer_weight,
        kinds=tuple(options.recall_kinds),
    )
    evaluator = Evaluator(
        corpus.val,
        tokenizer,
        options.seq_len,
        options.eval_sequences,
        options.eval_recall,
        options.eval_distances,
        options.seed,
        options.batch_size,
    )
    loss_module: nn.Module = WeightedLoss(model)
    if dist.world > 1:
        device_ids = [device] if device_kind == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=device_ids)
    progress = Progress(out, step, options.steps, dist.main, options.progress)
    tokens_per_step = dist.world * options.batch_size * options.grad_accum * options.seq_len
    progress.write(
        f"{'resuming at step ' + str(step) + ' from ' + str(checkpoints[-1]) if checkpoints else 'starting'}"
        f": {config.variant} {model.num_parameters() / 1e6:.2f}M parameters, vocab {tokenizer.vocab_size}, "
        f"{len(corpus.train):,} training and {len(corpus.val):,} held-out tokens, {dist.world} rank(s) on "
        f"{device_kind} x {torch.get_num_threads()} thread(s), {tokens_per_step:,} tokens per step"
    )
    if not checkpoints and dist.main:
        progress.record({"event": "start", "parameters": model.num_parameters(), "config": config.to_dict()})

    stop = _StopRequest()
    limit = options.steps if options.stop_after is None else min(options.steps, step + options.stop_after)
    started = time.perf_counter()
    last_save = time.monotonic()
    window = _Window()
    gate = _Gate(options.gate_accuracy, options.gate_reports)
    failures = 0
    newest: Path | None = None
    model.train()

    def info() -> dict[str, Any]:
        return _run_info(options, config, dist, device_kind, step, tokens, seconds(), metrics)

    def seconds() -> float:
        return seconds_before + time.perf_counter() - started

    batches = iter(_micro_batches(samples, options, dist, step, limit))
    with stop:
        while step < limit:
            began = time.perf_counter()
            rate = learning_rate(step, options)
            for group in optimizer.param_groups:
                group["lr"] = rate
            for micro in range(options.grad_accum):
                batch = next(batches).to(device)
                syncing = dist.world == 1 or micro == options.grad_accum - 1
                with nullcontext() if syncing else loss_module.no_sync():
                    loss, losses, predicted = loss_module(batch.inputs, batch.targets, batch.weights)
                    (loss / options.grad_accum).backward()
                window.add(loss, losses, predicted, batch)
            norm = nn.utils.clip_grad_norm_(model.parameters(), options.clip or math.inf)
            if torch.isfinite(norm):  # the same on every rank: the gradients are already averaged
                gate_rate.step(optimizer)
                failures = 0
            else:
                failures += 1
                window.skipped += 1
                progress.write(f"step {step + 1}: the gradients are not finite; the update is skipped")
                if failures == MAX_SKIPPED:
                    raise FloatingPointError(
                        f"{MAX_SKIPPED} steps in a row had non-finite gradients (step {step + 1}): "
                        "lower --lr, or the memory's max_lr (--set max_lr=...)"
                    )
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += tokens_per_step
            window.finish_step(float(norm), time.perf_counter() - began, tokens_per_step)
            progress.advance(1, {"loss": f"{loss.item():.3f}"})

            if step % options.log_every == 0 or step == limit:
                report = window.report(dist)
                eta = (options.steps - step) * report["seconds_per_step"]
                skipped = f" | skipped {report['skipped']}" if report["skipped"] else ""
                answer = "answer -"
                if report["answer_loss"] is not None:
                    answer = f"answer {report['answer_loss']:.4f} acc {report['answer_accuracy']:.2f}"
                progress.write(
                    f"step {step}/{options.steps} | loss {report['loss']:.4f}"
                    f" | text {report['text_loss']:.4f}"
                    f" | {answer}"
                    f" | lr {rate:.2e} | grad {report['grad_norm']:.2f}{skipped}"
                    f" | {report['tokens_per_second']:,.0f} tok/s | elapsed {duration(seconds())}"
                    f" | ETA {duration(eta)}"
                )
                progress.record({"step": step, "tokens": tokens, "lr": rate, **report})
                if gate.passes(report["answer_accuracy"]):
                    progress.write(f"gate open at step {step}: answer accuracy >= {options.gate_accuracy}")
                    progress.record({"event": "gate", "open": True, "step": step})
                    limit = step

            if (options.eval_every and step % options.eval_every == 0) or step == options.steps or gate.open:
                metrics = evaluator(model, dist)
                if metrics:
                    shown = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    progress.write(f"eval at step {step}: {shown}")
                    progress.record({"step": step, "tokens": tokens, "eval": metrics})

            due = (options.save_every and step % options.save_every == 0) or (
                options.save_minutes and time.monotonic() - last_save >= 60 * options.save_minutes
            )
            if dist.world > 1:  # a signal may reach the ranks a step apart: stop together
                flag = dist.sum(torch.tensor([float(stop.requested is not None)]))
                if flag.item() and not stop.requested:
                    stop.requested = "another rank's signal"
            if step == limit or stop.requested or due:
                if dist.main:
                    newest = save_checkpoint(
                        out, model, optimizer, step, tokens, seconds(), info(), options.keep
                    )
                    progress.write(f"saved {newest}")
                last_save = time.monotonic()
            if stop.requested:
                progress.write(f"stopping at step {step} ({stop.requested}); continue with --resume")
                break

    progress.close()
    digests = dist.gather(parameter_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"the ranks' parameters differ after step {step}: {digests}")
    if dist.world > 1:
        progress.write(f"parameters identical on all {dist.world} ranks (sha256 {digests[0][:16]})")
    finished = step >= options.steps or gate.open
    if options.gate_accuracy is not None and step >= options.steps and not gate.open and dist.main:
        progress.write(f"gate still shut at the step cap ({options.steps}): the stage ends anyway")
        progress.record({"event": "gate", "open": False, "step": step})
    export = None
    if finished and dist.main and (step > first_step or not (out / FINAL_DIR).is_dir()):
        export = out / FINAL_DIR
        model.save_pretrained(export)
        (export / INFO_FILE).write_text(json.dumps(info(), indent=2, sort_keys=True) + "\n")
        progress.write(f"exported {export} ({duration(seconds())} of training, {tokens:,} tokens)")
    elif finished:
        export = out / FINAL_DIR
    else:
        progress.write(f"stopped at step {step} of {options.steps}; continue with --resume")
    dist.barrier()
    return TrainResult(step, tokens, seconds(), finished, export, newest, metrics, digests[0])


class _MicroBatches(Dataset):
    """This rank's micro-batches from step ``first`` to ``limit``, in order: item ``k`` depends only
    on its index, so worker processes build them ahead and the run trains on exactly the samples
    the in-process loop would."""

    def __init__(
        self, samples: SampleSource, options: TrainOptions, dist: Distributed, first: int, limit: int
    ):
        self.samples, self.options, self.dist, self.first = samples, options, dist, first
        self.length = (limit - first) * options.grad_accum

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> Batch:
        o = self.options
        step, micro = self.first + k // o.grad_accum, k % o.grad_accum
        return self.samples.batch(
            shard(step, micro, o.grad_accum, o.batch_size, self.dist.rank, self.dist.world)
        )


def _micro_batches(
    samples: SampleSource, options: TrainOptions, dist: Distributed, first: int, limit: int
) -> DataLoader:
    """Batches built by ``options.workers`` processes ahead of the step (0: in this process), so a
    fast accelerator does not wait on Python building conversations."""
    workers = options.workers
    return DataLoader(
        _MicroBatches(samples, options, dist, first, limit),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        pin_memory=False,
    )


def _check_run_folder(options: TrainOptions, out: Path) -> None:
    """A fresh run needs a folder without a run; a resumed one the same options as before."""
    stored_file = out / OPTIONS_FILE
    if not stored_file.is_file():
        return
    if not options.resume:
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or pick another --out")
    stored = TrainOptions.from_dict(json.loads(stored_file.read_text()))
    differences = options.differences(stored)
    if differences:
        raise ValueError(
            f"resuming {out} needs the options it was started with; these differ: " + "; ".join(differences)
        )


def _config(options: TrainOptions, vocab_size: int) -> TitansConfig:
    """The model's config: ``options.model`` over the defaults, the vocabulary rounded up to 64."""
    return TitansConfig.from_dict({"vocab_size": -(-vocab_size // 64) * 64, **options.model})


def _init_source(options: TrainOptions) -> TitansLM | None:
    """The model ``--init`` names, which a stage continues: its config is the run's (resumed runs
    too), unless ``options.model`` names fields, which must then agree with it."""
    if not options.init:
        return None
    source = TitansLM.from_pretrained(options.init)
    theirs = source.config.to_dict()
    differ = [f"{k}: {theirs[k]!r} there, {v!r} here" for k, v in options.model.items() if theirs.get(k) != v]
    if differ:
        raise ValueError(f"--init {options.init} is another model; its config differs: " + "; ".join(differ))
    return source


def _tokenizer(
    options: TrainOptions, out: Path, dist: Distributed, texts: list[str], source: TitansLM | None
) -> Tokenizer:
    """The run's tokenizer, kept as ``out/tokenizer.json`` (made by rank 0, read by every rank):
    by default the ``--init`` model's own, else a BPE trained on the data."""
    path = out / TOKENIZER_FILE
    if dist.main and not (options.resume and path.is_file()):
        if options.tokenizer is None and source is not None:
            tokenizer = source.tokenizer
        elif options.tokenizer == "byte":
            tokenizer = Tokenizer.byte_level()
        elif options.tokenizer is not None:
            tokenizer = Tokenizer.from_file(options.tokenizer)
        else:
            tokenizer = train_tokenizer(texts, options.vocab_size)
        tokenizer.save(path)
    dist.barrier()
    return Tokenizer.from_file(path)


def _run_info(options, config, dist, device_kind, step, tokens, seconds, metrics) -> dict[str, Any]:
    """What a model card needs: data, steps, tokens, time, hardware, evaluation."""
    return {
        "step": step,
        "steps": options.steps,
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "world_size": dist.world,
        "device": device_kind,
        "threads": torch.get_num_threads(),
        "hardware": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "torch": torch.__version__,
        "config": config.to_dict(),
        "options": options.to_dict(),
        "eval": metrics,
    }


class _Window:
    """Training numbers since the last report, summed over ranks when reported."""

    def __init__(self) -> None:
        # loss, sequences, text loss, text tokens, answer loss, answer tokens, right, answered
        self.sums = torch.zeros(8, dtype=torch.float64)
        self.grad_norm, self.steps, self.seconds, self.tokens, self.skipped = 0.0, 0, 0.0, 0, 0

    def add(self, loss: Tensor, losses: Tensor, predicted: Tensor, batch: Batch) -> None:
        if not torch.isfinite(loss):
            return  # a skipped step (see MAX_SKIPPED): counted there, not averaged in
        losses, predicted, targets = losses.cpu(), predicted.cpu(), batch.targets.cpu()
        answers, weights = batch.answers.cpu(), batch.weights.cpu()
        text = (weights > 0) & ~answers
        answered = answers.any(dim=1)
        right = ((predicted == targets) | ~answers).all(dim=1) & answered
        numbers = [loss.item(), 1, losses[text].sum().item(), text.sum().item()]
        numbers += [losses[answers].sum().item(), answers.sum().item(), right.sum().item()]
        numbers += [answered.sum().item()]
        self.sums += torch.tensor(numbers, dtype=torch.float64)

    def finish_step(self, grad_norm: float, seconds: float, tokens: int) -> None:
        if math.isfinite(grad_norm):
            self.grad_norm += grad_norm
        self.steps += 1
        self.seconds += seconds
        self.tokens += tokens

    def report(self, dist: Distributed) -> dict[str, float]:
        """The averages since the last report (a collective: every rank calls it at the same step)."""
        sums = dist.sum(self.sums).tolist()
        report = {
            "loss": sums[0] / max(sums[1], 1),
            "text_loss": sums[2] / max(sums[3], 1),
            "answer_loss": sums[4] / sums[5] if sums[5] else None,  # None: no recall task seen
            "answer_accuracy": sums[6] / sums[7] if sums[7] else None,
            "grad_norm": self.grad_norm / max(self.steps - self.skipped, 1),
            "skipped": self.skipped,
            "tokens_per_second": self.tokens / max(self.seconds, 1e-9),
            "seconds_per_step": self.seconds / max(self.steps, 1),
        }
        self.__init__()
        return report


class _Gate:
    """A curriculum stage's gate: open once ``reports`` log windows in a row reach ``accuracy``."""

    def __init__(self, accuracy: float | None, reports: int):
        self.accuracy, self.reports, self.streak, self.open = accuracy, reports, 0, False

    def passes(self, measured: float | None) -> bool:
        """Count a report's answer accuracy (None: no answer seen); True once the gate opens."""
        if self.accuracy is None or self.open:
            return False
        self.streak = self.streak + 1 if measured is not None and measured >= self.accuracy else 0
        self.open = self.streak >= self.reports
        return self.open


class _StopRequest:
    """SIGINT or SIGTERM during training: finish the step, save a checkpoint, return."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
