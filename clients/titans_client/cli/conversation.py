"""``titans chat`` and ``titans ingest``: talk to a session, and put documents into its memory."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from titans_client.cli._common import ApiKey, BaseUrl, connect, console, errors
from titans_client.client import DEFAULT_URL
from titans_client.types import IngestProgress

Session = Annotated[
    str | None, typer.Option("--session", "-s", help="the session (default: a throwaway memory)")
]


def chat(
    session: Session = None,
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="send this one message and exit (default: interactive)"),
    ] = None,
    system: Annotated[str | None, typer.Option(help="a system message before the first turn")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="longest reply, in tokens")] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="0: greedy (unset: the model's own default, its generation_config.json)"),
    ] = None,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Chat with a session, streaming the replies. Interactive: an empty line or Ctrl-D ends it.

    Each turn sends only the new message: the session's memory holds the conversation (without
    --session, an interactive chat runs on a session of its own, deleted at the end).
    """
    params = {
        **({"temperature": temperature} if temperature is not None else {}),
        **({"max_tokens": max_tokens} if max_tokens else {}),
    }
    pending = [{"role": "system", "content": system}] if system else []
    with connect(base_url, api_key) as client, ExitStack() as cleanup:
        if session is None and message is None:
            session = client.create_session(metadata={"by": "titans chat"}, ttl_seconds=86400).id
            cleanup.callback(client.delete_session, session)
        while True:
            text = message if message is not None else _ask()
            if not text:
                return
            pending.append({"role": "user", "content": text})
            for piece in client.chat(session, pending, stream=True, **params):
                console.out(piece, end="", highlight=False)
            console.out("")
            pending = []
            if message is not None:
                return


def _ask() -> str:
    try:
        return console.input("[bold]you>[/bold] ").strip()
    except EOFError:
        return ""


def ingest(
    files: Annotated[list[Path], typer.Argument(help="UTF-8 text files", exists=True, dir_okay=False)],
    session: Annotated[str, typer.Option("--session", "-s", help="the session to learn them")],
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Put documents into a session's memory, one after another, with a progress bar."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        TextColumn("{task.fields[rate]:,.0f} tok/s"),
        TimeRemainingColumn(),
    )
    with connect(base_url, api_key) as client, Progress(*columns, console=errors) as bar:
        for file in files:
            task = bar.add_task(file.name, total=None, rate=0.0)

            def show(update: IngestProgress, task=task) -> None:
                bar.update(
                    task,
                    completed=update.tokens_done,
                    total=update.tokens_total,
                    rate=update.tokens_per_second,
                )

            done = client.ingest(session, file, progress=show)
            bar.update(
                task,
                completed=done.tokens_ingested,
                total=done.tokens_ingested,
                rate=done.tokens_per_second or 0,
            )
            loss = "" if done.mean_loss is None else f", mean loss {done.mean_loss:.3f} nats"
            write = "" if done.mean_write_strength is None else f", mean write {done.mean_write_strength:.4f}"
            bar.console.print(
                f"{file}: {done.tokens_ingested:,} tokens in {done.seconds:.1f} s{loss}{write}; "
                f"session {done.session_id} at version {done.version}"
            )
