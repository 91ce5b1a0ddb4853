"""``titans``: the command line of Titans Serve (server, chat, ingestion, sessions, training)."""

from __future__ import annotations

from titans_client.cli import admin, conversation, data, evaluate, sessions
from titans_client.cli._common import Typer
from titans_client.cli.train import train

app = Typer(
    name="titans",
    help="Titans Serve: language models whose sessions keep learning at test time.",
    no_args_is_help=True,
    add_completion=False,
)


app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)(admin.serve)
app.command()(conversation.chat)
app.command()(conversation.ingest)
app.add_typer(sessions.app, name="sessions")
app.command()(admin.models)
app.add_typer(admin.keys, name="keys")
app.add_typer(evaluate.app, name="eval")
app.add_typer(data.app, name="data")
app.command()(train)
