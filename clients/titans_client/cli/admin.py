"""``titans serve``, ``titans models`` and ``titans keys add``: running and administering a server."""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Annotated

import typer

from titans_client.cli._common import ApiKey, BaseUrl, Typer, connect, console, print_json, requires
from titans_client.client import DEFAULT_URL

# The keys file's format, the server's (titans_server.auth): written here with the standard library
# alone, so that `titans keys add` works where only the client is installed.
TENANT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

keys = Typer(help="API keys of a server (`--api-keys-file`).", no_args_is_help=True)


def serve(ctx: typer.Context) -> None:
    """Run the server: the same as `titans-server` (flags: `titans serve --help`)."""
    requires("titans_server.__main__", "server").main(ctx.args)


def models(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    base_url: BaseUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """The models the server serves."""
    with connect(base_url, api_key) as client:
        found = client.models()
    if as_json:
        print_json(found)
    else:
        for model in found:
            console.print(model.id)


@keys.command("add")
def add_key(
    tenant: Annotated[str, typer.Argument(help="who the key belongs to (1-64 letters, digits or ._-)")],
    file: Annotated[Path, typer.Option("--file", "-f", help="the server's keys file (created if missing)")],
) -> None:
    """Make a new key for TENANT: its hash goes into the file, the key itself is printed once."""
    if not TENANT_NAME.fullmatch(tenant):
        raise typer.BadParameter("1-64 letters, digits or ._-", param_hint="TENANT")
    key = "tsk-" + secrets.token_urlsafe(32)
    existing = file.read_text() if file.exists() else ""
    separator = "" if not existing or existing.endswith("\n") else "\n"
    with file.open("a") as out:
        out.write(f"{separator}{tenant} {hashlib.sha256(key.encode()).hexdigest()}\n")
    file.chmod(0o600)
    console.out(key)
