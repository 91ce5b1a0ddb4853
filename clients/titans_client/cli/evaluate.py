"""``titans eval passkey`` and ``titans eval ingest-loss``: measure a served model's memory over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from titans_client import evals
from titans_client.cli._common import ApiKey, BaseUrl, connect, console, errors
from titans_client.client import DEFAULT_URL

app = typer.Typer(help="Evaluate a running server's memory, through its API.", no_args_is_help=True)


@app.command("passkey")
def passkey(
    distance: Annotated[int, typer.Option(min=1, help="filler tokens between the passkey and the question")],
    trials: Annotated[int, typer.Option(min=1, help="passkeys to ask for")] = 20,
    filler: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="filler text (default: the classic)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the passkeys and filler offsets")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON report")] = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Ingest a passkey then DISTANCE tokens of filler, then ask for it in a separate call.

    The JSON report comes last: accuracy, ablation_accuracy (memory reset between the calls) and
    the settings.
    """
    text = evals.CLASSIC_FILLER if filler is None else filler.read_text()
    columns = (TextColumn(f"passkey at {distance:,} tokens"), BarColumn(), MofNCompleteColumn())
    with connect(base_url, api_key) as client, Progress(*columns, console=errors) as bar:
        task = bar.add_task("trials", total=trials)
        report = evals.passkey(
            client, distance, trials, filler=text, seed=seed, on_trial=lambda _: bar.advance(task)
        )
    if not as_json:
        console.print(
            f"accuracy {report['accuracy']:.0%}, ablation {report['ablation_accuracy']:.0%} "
            f"({trials} trials, {report['mean_distance_tokens']:,.0f} tokens apart)"
        )
    console.out(json.dumps(report), highlight=False)


@app.command("ingest-loss")
def ingest_loss(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a held-out text")],
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON report")] = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Loss on the second half of FILE after ingesting its first half, vs on a fresh session."""
    with connect(base_url, api_key) as client:
        report = evals.ingest_loss(client, file.read_text())
    if not as_json:
        console.print(
            f"loss {report['loss_after_first_half']:.4f} nats with the first half in memory, "
            f"{report['loss_fresh']:.4f} without: the memory helps by {report['gap']:+.4f}"
        )
    console.out(json.dumps(report), highlight=False)
