"""The `charrnn` command: a click group whose subcommands live in charrnn.commands."""

import difflib
import importlib
import os
import sys

import click

from charrnn import __version__
from charrnn.errors import CharrnnError, OutputClosed

# name: (module, function, the line `charrnn --help` shows). A command's module (and with it numba,
# scipy, matplotlib) is imported only when that command runs, so the overview answers at once;
# tests/test_cli.py checks these lines against the commands' own docstrings.
COMMANDS = {
    "corpus": ("charrnn.commands.corpus", "corpus", "Get a training corpus and print its path."),
    "prepare": (
        "charrnn.commands.prepare",
        "prepare",
        "Prepare FILE for training: its ids in one memory-mappable file.",
    ),
    "train": ("charrnn.commands.train", "train", "Train a character-level model on FILE."),
    "sample": ("charrnn.commands.sample", "sample", "Generate text from CHECKPOINT."),
    "eval": (
        "charrnn.commands.evaluate",
        "evaluate",
        "Loss of CHECKPOINT on FILE, or on its corpus's validation/test split.",
    ),
    "info": (
        "charrnn.commands.evaluate",
        "info",
        "Describe CHECKPOINT: model, vocabulary, training progress and losses.",
    ),
    "inspect": ("charrnn.commands.inspect", "inspect", "Find the cells of CHECKPOINT that follow features of a text."),
    "tune": ("charrnn.commands.tune", "tune", "Search train options for FILE with Optuna within a time budget."),
    "serve": (
        "charrnn.commands.serve",
        "serve",
        "Serve CHECKPOINT over HTTP: a page at /, and POST /v1/generate for programs (streamed or whole).",
    ),
    "export": (
        "charrnn.commands.export",
        "export",
        "Write CHECKPOINT as an ONNX model or as PyTorch-named safetensors weights.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, function, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), function)

    def resolve_command(self, ctx, args):
        name = click.utils.make_str(args[0]) if args else ""
        if args and name not in COMMANDS and not name.startswith("-"):
            # click suggests from the commands it holds, and this group holds none until asked.
            close = difflib.get_close_matches(name, COMMANDS)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise click.UsageError(f"No such command {name!r}.{hint}", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Character-level LSTM/GRU/RNN language models: train, sample, evaluate and inspect.

    Start with `charrnn corpus default`, then `charrnn train FILE`; `charrnn COMMAND --help` for more.
    """


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
        click.echo(
            f"charrnn: error: not enough memory{detail}; use smaller sizes "
            "(--hidden, --layers, --batch-size, --seq-length, --num-samples, --max-chars)",
            err=True,
        )
        sys.exit(1)
    except (OutputClosed, BrokenPipeError):
        # `charrnn sample ... | head` closes the pipe early; that is not an error. Python's final
        # flush of stdout would hit the closed pipe again, so stdout goes to /dev/null first.
        _silence_stdout()
        sys.exit(0)
    except OSError as error:
        click.echo(f"charrnn: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), err=True)
        sys.exit(1)


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
