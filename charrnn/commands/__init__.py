"""One module per `charrnn` subcommand; charrnn.cli registers them. Options several commands share live here."""

import click

WHICH = click.option(
    "--which",
    default="best",
    show_default=True,
    type=click.Choice(["best", "latest"]),
    help="for a run directory: its best (lowest validation loss) or latest checkpoint",
)
