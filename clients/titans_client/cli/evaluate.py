"""``titans eval passkey``, ``conversation`` and ``ingest-loss``: a served model's memory over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from titans_client import conversation_eval, evals
from titans_client.cli._common import ApiKey, BaseUrl, Typer, connect, console, errors, errors_as_messages
from titans_client.client import DEFAULT_URL

app = Typer(help="Evaluate a running server's memory, through its API.", no_args_is_help=True)


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

    The JSON report comes last: accuracy, ablation_accuracy (memory reset between the calls), each
    trial's passkey and replies, and the settings.
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


@app.command("conversation")
def conversation(
    trials: Annotated[
        int, typer.Option(min=1, help="trials per fact kind, passkey distance and document")
    ] = 30,
    distance: Annotated[
        int, typer.Option(min=1, help="tokens of conversation between a fact and its question, at least")
    ] = 512,
    passkey_distance: Annotated[
        list[int] | None, typer.Option(min=1, help="passkey filler tokens (repeat; default 4096 and 16384)")
    ] = None,
    part: Annotated[
        list[str] | None,
        typer.Option(help=f"which parts: {', '.join(conversation_eval.PARTS)} (default: all)"),
    ] = None,
    filler: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="filler text (default: the classic)")
    ] = None,
    stream_tokens: Annotated[
        int, typer.Option(min=1, help="tokens streamed into one session before the stream part's facts")
    ] = 1_000_000,
    reply_tokens: Annotated[
        int, typer.Option(min=1, help="the longest reply (max_tokens) of each call")
    ] = 48,
    seed: Annotated[int, typer.Option(help="seed of the values, prompts and filler offsets")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON report")] = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Tell a session facts in chat and ask for them calls later, through the openai SDK.

    Recall by fact kind and by distance, each with its ablation (the session reset before the
    question); a passkey with chat turns between; facts in an ingested document; whether everyday
    prompts get replies in words; and facts told after a million streamed tokens. The JSON report
    comes last.
    """
    parts = tuple(part or conversation_eval.PARTS)
    distances = tuple(passkey_distance or (4096, 16384))
    text = evals.CLASSIC_FILLER if filler is None else filler.read_text()
    facts = trials * len(conversation_eval.prompts.FACT_KINDS) * ("facts" in parts)
    total = facts + trials * len(distances) * ("passkey" in parts) + trials * ("document" in parts)
    total += len(conversation_eval.ORDINARY_PROMPTS) * ("ordinary" in parts) + trials * ("stream" in parts)
    columns = (TextColumn("conversation"), BarColumn(), MofNCompleteColumn())
    import openai

    with Progress(*columns, console=errors) as bar, errors_as_messages(openai.OpenAIError):
        task = bar.add_task("trials", total=total)
        report = conversation_eval.conversation(
            base_url,
            api_key,
            trials,
            distance=distance,
            passkey_distances=distances,
            filler=text,
            parts=parts,
            stream_tokens=stream_tokens,
            reply_tokens=reply_tokens,
            seed=seed,
            on_trial=lambda _: bar.advance(task),
        )
    if not as_json:
        for kind, numbers in report.get("facts", {}).items():
            console.print(
                f"{kind}: {numbers['accuracy']:.0%}, ablation {numbers['ablation_accuracy']:.0%} "
                f"({numbers['trials']} trials, {numbers['mean_distance_tokens']:,.0f} tokens apart)"
            )
        for tokens, numbers in report.get("passkey", {}).items():
            console.print(
                f"passkey at {tokens} tokens: {numbers['accuracy']:.0%}, "
                f"ablation {numbers['ablation_accuracy']:.0%}"
            )
        if "document" in report:
            numbers = report["document"]
            console.print(
                f"document facts: {numbers['accuracy']:.0%}, ablation {numbers['ablation_accuracy']:.0%}"
            )
        if "stream" in report:
            numbers = report["stream"]
            console.print(
                f"facts after {report['streamed_tokens']:,} streamed tokens: {numbers['accuracy']:.0%}, "
                f"ablation {numbers['ablation_accuracy']:.0%}"
            )
        if "ordinary" in report:
            console.print(f"ordinary prompts answered in words: {report['ordinary']['words_rate']:.0%}")
    console.out(json.dumps(report), highlight=False)
