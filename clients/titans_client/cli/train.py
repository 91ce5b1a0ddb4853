"""``titans train``: train a Titans language model on text files (``titans_core.train``).

Every option maps to a field of :class:`titans_core.train.TrainOptions`; options not given keep
its defaults. torch is imported only when the command runs, so ``titans --help`` stays fast.
Under ``torchrun --no-python --nproc-per-node N titans train ...`` each process trains a shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from titans_client.cli._common import requires

Opt = typer.Option
Data = "Data"
Model = "Model"
Optim = "Optimization"
Recall = "Recall tasks"
Run = "Run (may change when resuming)"


def _model_fields(config: Path | None, settings: list[str] | None) -> dict[str, Any] | None:
    """``--config`` JSON, then each ``--set KEY=VALUE`` (VALUE as JSON if it parses, else a string)."""
    fields: dict[str, Any] = {}
    if config is not None:
        loaded = json.loads(config.read_text())
        if not isinstance(loaded, dict):
            raise typer.BadParameter("the config must be a JSON object", param_hint="--config")
        fields.update(loaded)
    for setting in settings or []:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {setting!r}", param_hint="--set")
        try:
            fields[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[key.strip()] = value
    return fields if config is not None or settings else None


def train(
    data: Annotated[list[Path], typer.Argument(help="text files or folders (.txt, read recursively)")],
    out: Annotated[Path, Opt(help="the run's folder: checkpoints, logs, final/ export")],
    tokenizer: Annotated[
        str | None,
        Opt(help="a tokenizer.json to reuse, or 'byte'; by default a BPE is trained", rich_help_panel=Data),
    ] = None,
    vocab_size: Annotated[
        int | None, Opt(help="BPE vocabulary (default: 4096)", rich_help_panel=Data)
    ] = None,
    val_fraction: Annotated[
        float | None, Opt(help="held-out tail of the tokens (default: 0.02)", rich_help_panel=Data)
    ] = None,
    config: Annotated[
        Path | None, Opt(help="JSON of TitansConfig fields for the model", rich_help_panel=Model)
    ] = None,
    init: Annotated[
        str | None,
        Opt(
            help="start from this model (a checkpoint folder or 'default'): its weights, config, tokenizer",
            rich_help_panel=Model,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        Opt("--set", help="a TitansConfig field, e.g. --set d_model=128 (repeat)", rich_help_panel=Model),
    ] = None,
    seq_len: Annotated[
        int | None, Opt(help="tokens per sequence (default: 2048)", rich_help_panel=Optim)
    ] = None,
    batch_size: Annotated[
        int | None, Opt(help="sequences per process per micro-step (default: 4)", rich_help_panel=Optim)
    ] = None,
    grad_accum: Annotated[
        int | None, Opt(help="micro-steps per step (default: 1)", rich_help_panel=Optim)
    ] = None,
    steps: Annotated[int | None, Opt(help="optimizer steps (default: 2000)", rich_help_panel=Optim)] = None,
    lr: Annotated[float | None, Opt(help="peak learning rate (default: 2e-3)", rich_help_panel=Optim)] = None,
    min_lr: Annotated[
        float | None, Opt(help="final learning rate (default: 2e-4)", rich_help_panel=Optim)
    ] = None,
    warmup: Annotated[int | None, Opt(help="warmup steps (default: 100)", rich_help_panel=Optim)] = None,
    weight_decay: Annotated[
        float | None, Opt(help="AdamW decay (default: 0.1)", rich_help_panel=Optim)
    ] = None,
    clip: Annotated[
        float | None, Opt(help="gradient norm clip, 0 off (default: 1.0)", rich_help_panel=Optim)
    ] = None,
    seed: Annotated[
        int | None, Opt(help="initialisation and data (default: 0)", rich_help_panel=Optim)
    ] = None,
    recall_fraction: Annotated[
        float | None, Opt(help="share of recall sequences (default: 0.5)", rich_help_panel=Recall)
    ] = None,
    recall_kind: Annotated[
        list[str] | None,
        Opt(
            help="passkey, facts, chat, document, passkey-chat (repeat; a kind given twice is drawn "
            "twice as often) (default: passkey, facts)",
            rich_help_panel=Recall,
        ),
    ] = None,
    min_distance: Annotated[
        int | None, Opt(help="shortest fact-question distance (default: 16)", rich_help_panel=Recall)
    ] = None,
    max_distance: Annotated[
        int | None, Opt(help="longest distance (default: as seq-len allows)", rich_help_panel=Recall)
    ] = None,
    answer_weight: Annotated[
        float | None, Opt(help="loss weight of answer tokens (default: 50)", rich_help_panel=Recall)
    ] = None,
    eval_every: Annotated[
        int | None, Opt(help="steps between evaluations (default: 200)", rich_help_panel=Run)
    ] = None,
    eval_sequences: Annotated[
        int | None, Opt(help="held-out sequences per evaluation (default: 8)", rich_help_panel=Run)
    ] = None,
    eval_recall: Annotated[
        int | None, Opt(help="passkey trials per distance (default: 32)", rich_help_panel=Run)
    ] = None,
    eval_distance: Annotated[
        list[int] | None,
        Opt(help="passkey distances evaluated (repeat) (default: 64, 1024)", rich_help_panel=Run),
    ] = None,
    save_every: Annotated[
        int | None, Opt(help="steps between checkpoints (default: 200)", rich_help_panel=Run)
    ] = None,
    save_minutes: Annotated[
        float | None, Opt(help="also checkpoint after so many minutes (default: off)", rich_help_panel=Run)
    ] = None,
    keep: Annotated[int | None, Opt(help="checkpoints kept (default: 2)", rich_help_panel=Run)] = None,
    log_every: Annotated[
        int | None, Opt(help="steps between log lines (default: 10)", rich_help_panel=Run)
    ] = None,
    threads: Annotated[int | None, Opt(help="torch threads per process", rich_help_panel=Run)] = None,
    workers: Annotated[
        int | None,
        Opt(help="processes that build batches ahead of the step (default: 0)", rich_help_panel=Run),
    ] = None,
    device: Annotated[str | None, Opt(help="auto, cpu or cuda (default: auto)", rich_help_panel=Run)] = None,
    resume: Annotated[
        bool, Opt("--resume", help="continue from the newest checkpoint in --out", rich_help_panel=Run)
    ] = False,
    stop_after: Annotated[
        int | None, Opt(help="stop after so many steps (then --resume)", rich_help_panel=Run)
    ] = None,
    progress: Annotated[
        str | None, Opt(help="auto, bar or lines (default: bar on a terminal)", rich_help_panel=Run)
    ] = None,
) -> None:
    """Train a Titans language model on text: BPE tokenizer, language modelling mixed with recall
    tasks for the neural memory, checkpoints, and a final export that `titans-server --model`
    serves. Run the same command with --resume to continue a run."""
    given = {
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "val_fraction": val_fraction,
        "model": _model_fields(config, set_),
        "init": init,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "steps": steps,
        "lr": lr,
        "min_lr": min_lr,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "clip": clip,
        "seed": seed,
        "recall_fraction": recall_fraction,
        "recall_kinds": recall_kind,
        "min_distance": min_distance,
        "max_distance": max_distance,
        "answer_weight": answer_weight,
        "eval_every": eval_every,
        "eval_sequences": eval_sequences,
        "eval_recall": eval_recall,
        "eval_distances": eval_distance,
        "save_every": save_every,
        "save_minutes": save_minutes,
        "keep": keep,
        "log_every": log_every,
        "threads": threads,
        "workers": workers,
        "device": device,
        "stop_after": stop_after,
        "progress": progress,
    }
    training = requires("titans_core.train", "train")

    try:
        options = training.TrainOptions(
            data=[str(p) for p in data],
            out=str(out),
            resume=resume,
            **{k: v for k, v in given.items() if v is not None},
        )
        training.train(
            options
        )  # stopped early (--stop-after, SIGINT, SIGTERM) is a success too: --resume continues
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)  # one unwrapped line: logs stay greppable
        raise typer.Exit(1) from error
