"""The `charrnn` command: a click group whose subcommands live in charrnn.commands."""

import sys

import click

from charrnn import __version__
from charrnn.commands.corpus import corpus
from charrnn.commands.evaluate import evaluate, info
from charrnn.commands.inspect import inspect
from charrnn.commands.sample import sample
from charrnn.commands.train import train
from charrnn.errors import CharrnnError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Character-level LSTM/GRU/RNN language models: train, sample, evaluate and inspect."""


for command in (corpus, train, sample, evaluate, info, inspect):
    cli.add_command(command)


def main(argv=None):
    """Entry point: user errors print one line on stderr and exit 1, Ctrl-C exits 130."""
    try:
        cli.main(args=argv, prog_name="charrnn", standalone_mode=False)
    except CharrnnError as error:
        click.echo(f"charrnn: error: {error}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("charrnn: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("charrnn: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as error:
        error.show()  # bare `charrnn`: the help text is the answer
        sys.exit(error.exit_code)
    except click.UsageError as error:
        # One line like every other error, instead of click's usage block.
        command = error.ctx.command_path if error.ctx is not None else "charrnn"
        message = " ".join(error.format_message().split()).removesuffix(".")
        click.echo(f"charrnn: error: {message}; see '{command} --help'", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except MemoryError as error:
        detail = f" ({error})" if str(error) else ""
        click.echo(f"charrnn: error: not enough memory{detail}; use smaller sizes "
                   "(--hidden, --layers, --batch-size, --seq-length, --num-samples, --max-chars)", err=True)
        sys.exit(1)
    except BrokenPipeError:
        # `charrnn sample ... | head` closes the pipe early; that is not an error.
        sys.stderr.close()
        sys.exit(0)
    except OSError as error:
        click.echo(f"charrnn: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), err=True)
        sys.exit(1)
