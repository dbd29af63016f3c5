"""Runs the real `charrnn` entry point in this process, for command-line tests."""

from charrnn.cli import main


def run_main(capsys, *args):
    """(exit code, stdout, stderr) of `charrnn ARGS`."""
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
