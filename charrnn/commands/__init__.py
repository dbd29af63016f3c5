"""One module per `charrnn` subcommand; charrnn.cli registers them. What several commands share lives here."""

import click

WHICH = click.option(
    "--which",
    default="best",
    show_default=True,
    type=click.Choice(["best", "latest"]),
    help="for a run directory: its best (lowest validation loss) or latest checkpoint",
)


def note(message):
    """A remark on stderr that does not stop the command."""
    click.echo(f"charrnn: note: {message}", err=True)
