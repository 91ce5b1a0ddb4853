"""``titans sessions ...``: list, show, inspect, delete, fork, reset, export and import sessions, list
and restore their kept versions."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from titans_client.cli._common import ApiKey, BaseUrl, Typer, connect, console, print_json
from titans_client.client import DEFAULT_URL
from titans_client.types import Session, SessionVersion

app = Typer(help="Manage sessions: each owns a memory that keeps learning.", no_args_is_help=True)

SessionId = Annotated[str, typer.Argument(help="the session id")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _when(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _table(sessions: list[Session]) -> Table:
    table = Table("id", "version", "tokens seen", "state", "updated (UTC)", "metadata")
    for s in sessions:
        meta = ", ".join(f"{k}={v}" for k, v in s.metadata.items())
        table.add_row(
            s.id, str(s.version), f"{s.tokens_seen:,}", f"{s.state_bytes:,} B", _when(s.updated_at), meta
        )
    return table


@app.command("ls")
def list_sessions(
    limit: Annotated[int, typer.Option(help="sessions per page")] = 20,
    after: Annotated[
        str | None, typer.Option(help="start after this id (the last of the previous page)")
    ] = None,
    as_json: AsJson = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List sessions, oldest first."""
    with connect(base_url, api_key) as client:
        page = client.list_sessions(limit=limit, after=after)
    if as_json:
        print_json(page)
        return
    console.print(_table(page.data))
    if page.has_more:
        console.print(f"more: titans sessions ls --after {page.last_id}")


@app.command("show")
def show(
    session_id: SessionId,
    as_json: AsJson = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show one session."""
    with connect(base_url, api_key) as client:
        session = client.get_session(session_id)
    if as_json:
        print_json(session)
    else:
        console.print(_table([session]))


@app.command("memory")
def memory(
    session_id: SessionId,
    as_json: AsJson = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show how far a session's memory has moved from the model's initial memory, per layer."""
    with connect(base_url, api_key) as client:
        report = client.session_memory(session_id)
    if as_json:
        print_json(report)
        return
    table = Table("layer", "weight norm", "distance from initial")
    for layer in report.layers:
        table.add_row(str(layer.layer), f"{layer.weight_norm:.4f}", f"{layer.distance_from_initial:.4f}")
    console.print(f"{report.session_id}: version {report.version}, {report.tokens_seen:,} tokens seen")
    console.print(table)


@app.command("rm")
def remove(
    session_id: SessionId,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Delete a session and its memory."""
    with connect(base_url, api_key) as client:
        client.delete_session(session_id)
    console.print(f"deleted {session_id}")


@app.command("fork")
def fork(
    session_id: SessionId,
    new_id: Annotated[str | None, typer.Argument(help="the copy's id (default: a new one)")] = None,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Copy a session's memory to a new session."""
    with connect(base_url, api_key) as client:
        copy = client.fork_session(session_id, new_id)
    console.print(f"forked {session_id} -> {copy.id}")


@app.command("reset")
def reset(
    session_id: SessionId,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Forget everything: back to the model's initial memory."""
    with connect(base_url, api_key) as client:
        session = client.reset_session(session_id)
    console.print(f"reset {session.id} (version {session.version})")


@app.command("export")
def export(
    session_id: SessionId,
    file: Annotated[Path, typer.Argument(help="where to write the state (safetensors)", dir_okay=False)],
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Save a session's memory to a file."""
    with connect(base_url, api_key) as client:
        data = client.export_state(session_id, file)
    console.print(f"wrote {len(data):,} bytes to {file}")


@app.command("import")
def import_(
    session_id: SessionId,
    file: Annotated[Path, typer.Argument(help="a state written by export", exists=True, dir_okay=False)],
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Create or replace a session from an exported memory."""
    with connect(base_url, api_key) as client:
        session = client.import_state(session_id, file)
    console.print(f"imported {file} into {session.id} (version {session.version})")


def _versions_table(versions: list[SessionVersion]) -> Table:
    table = Table("version", "made by", "tokens seen", "state", "at (UTC)", "request id")
    for v in versions:
        made = (v.made_by or "?") + (f" of {v.restored_from}" if v.restored_from is not None else "")
        mark = " (current)" if v.current else ""
        row = (f"{v.version}{mark}", made, f"{v.tokens_seen:,}", f"{v.state_bytes:,} B", _when(v.created_at))
        table.add_row(*row, v.request_id or "")
    return table


@app.command("versions")
def versions(
    session_id: SessionId,
    as_json: AsJson = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List a session's current version and the kept ones it can be restored to, newest first."""
    with connect(base_url, api_key) as client:
        found = client.versions(session_id)
    if as_json:
        print_json(found)
    else:
        console.print(_versions_table(found))


@app.command("restore")
def restore(
    session_id: SessionId,
    version: Annotated[int, typer.Argument(help="a version `titans sessions versions` lists")],
    if_version: Annotated[
        int | None, typer.Option(help="only if the session is still at this version (else refused)")
    ] = None,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Make a kept version the newest: its memory and transcript come back as a new version."""
    with connect(base_url, api_key) as client:
        session = client.restore(session_id, version, if_version=if_version)
    console.print(f"restored {session.id} to version {version} (now version {session.version})")
