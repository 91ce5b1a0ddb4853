"""``titans serve``, ``titans models`` and ``titans keys add``: running and administering a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from titans_client.cli._common import ApiKey, BaseUrl, Typer, connect, console, print_json, requires
from titans_client.client import DEFAULT_URL

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
    auth = requires("titans_server.auth", "server")
    if not auth.TENANT_NAME.fullmatch(tenant):
        raise typer.BadParameter("1-64 letters, digits or ._-", param_hint="TENANT")
    key = auth.new_key()
    existing = file.read_text() if file.exists() else ""
    separator = "" if not existing or existing.endswith("\n") else "\n"
    with file.open("a") as out:
        out.write(f"{separator}{tenant} {auth.hash_key(key)}\n")
    file.chmod(0o600)
    console.out(key)
