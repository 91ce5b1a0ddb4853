"""What every client command shares: the connection options, the console, and errors as messages."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from titans_client import TitansClient, TitansError

console = Console()
errors = Console(stderr=True)

BaseUrl = Annotated[str, typer.Option(envvar="TITANS_BASE_URL", help="the server", show_default=True)]
ApiKey = Annotated[str | None, typer.Option(envvar="TITANS_API_KEY", help="an API key of the server")]
TIMEOUT = 3600.0  # seconds; long documents take long


def _bare_flags(params: list) -> list:
    """``params`` with each flag's metavar set to nothing: typer's rich help prints a flag's metavar
    in place of its type, and its type is ``<bool>``, as if ``--json`` or ``--help`` took a value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose help lists its flags bare."""

    def get_params(self, ctx: typer.Context) -> list:
        return _bare_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A group of commands whose help lists its flags bare."""

    def get_params(self, ctx: typer.Context) -> list:
        return _bare_flags(super().get_params(ctx))


class Typer(typer.Typer):
    """``typer.Typer`` whose commands' help lists flags bare (``--json``, not ``--json <bool>``)."""

    def __init__(self, **options: Any):
        super().__init__(cls=Group, **options)

    def command(self, *args: Any, **options: Any):
        return super().command(*args, **{"cls": Command, **options})


@contextmanager
def errors_as_messages(*also: type[Exception]) -> Iterator[None]:
    """An API error (a ``TitansError``, or one of ``also``) becomes a red line on stderr and exit 1."""
    try:
        yield
    except (TitansError, *also) as error:
        errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
        raise typer.Exit(1) from error


@contextmanager
def connect(base_url: str, api_key: str | None) -> Iterator[TitansClient]:
    """A client for the server; an API error becomes a red line on stderr and exit code 1."""
    with errors_as_messages(), TitansClient(base_url, api_key=api_key, timeout=TIMEOUT) as client:
        yield client


def print_json(value: object) -> None:
    """Dataclasses and lists of them as JSON on stdout, for scripts."""
    if isinstance(value, list):
        value = [asdict(item) for item in value]
    elif hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    console.out(json.dumps(value, indent=2), highlight=False)


def requires(module: str, extra: str) -> ModuleType:
    """``module`` of the server or the training tools, which the client alone (``pip install
    ./clients``) does not bring: without it, one line saying what to install, and exit code 1."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        errors.print(
            f"error: this command needs titans-serve[{extra}]: from the repository's root, "
            f"pip install torch -e '.[{extra}]' ({error})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from error
