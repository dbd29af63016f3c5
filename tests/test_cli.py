"""The `charrnn` entry point: version, help, and usage mistakes as one line on stderr."""

import importlib
import json
import subprocess
import sys

import pytest
from cli_runner import run_main

from charrnn import __version__
from charrnn.cli import COMMANDS

SUBCOMMANDS = ("train", "sample", "eval", "info", "inspect", "corpus", "export")


def test_version_from_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"charrnn, version {__version__}"


@pytest.mark.parametrize("args", [("--help",), ("-h",)] + [(command, "--help") for command in SUBCOMMANDS])
def test_help_of_every_command(capsys, args):
    code, out, err = run_main(capsys, *args)
    assert code == 0 and err == ""
    assert out.startswith("Usage: charrnn") and "Options:" in out


def test_bare_charrnn_shows_the_help(capsys):
    code, out, err = run_main(capsys)
    assert code == 2 and "Commands:" in out + err and "sample" in out + err


@pytest.mark.parametrize(
    "args, phrases",
    [
        (("sample", "ckpt.npz", "--temperature", "warm"), ("'warm' is not a valid float", "'charrnn sample --help'")),
        (("sampel",), ("No such command 'sampel'", "Did you mean 'sample'?", "'charrnn --help'")),
        (("sample",), ("Missing argument 'CHECKPOINT'",)),
        (("eval", "ckpt.npz", "--split", "dev"), ("'dev' is not one of",)),
        (("inspect", "ckpt.npz", "--cell", "a:b"), ("'a:b' is not LAYER:CELL", "'charrnn inspect --help'")),
        (("inspect", "ckpt.npz", "--feature", "("), ("invalid regular expression '('",)),
        (("train", "--bogus"), ("No such option '--bogus'",)),
        (("train", "corpus.txt", "--seed", "-1"), ("'--seed': -1 is not in the range x>=0",)),
        (("sample", "ckpt.npz", "--seed", "-1"), ("'--seed': -1 is not in the range x>=0",)),
    ],
)
def test_usage_mistakes_are_one_line(capsys, args, phrases):
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("charrnn: error: "), err
    assert ".;" not in err  # click's sentence-ending period does not run into the hint
    for phrase in phrases:
        assert phrase in err, err


def test_a_directory_where_a_file_belongs(capsys, tmp_path):
    code, _, err = run_main(capsys, "train", tmp_path)  # a directory, but not one `charrnn prepare` made
    assert code == 1 and err.count("\n") == 1 and "is a directory but not a prepared corpus" in err


def test_running_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path):
    def too_big(*_):
        raise MemoryError("Unable to allocate 80.0 GiB for an array with shape (28, 400000000)")

    monkeypatch.setattr("charrnn.commands.evaluate.load_model", too_big)
    (tmp_path / "ckpt.npz").write_bytes(b"")  # never read: loading it runs out of memory
    code, out, err = run_main(capsys, "info", tmp_path / "ckpt.npz")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("charrnn: error: not enough memory (Unable to allocate 80.0 GiB") and "--hidden" in err


def test_the_overview_lists_every_command_without_importing_them():
    """`charrnn --help` answers without numba; its one-line summaries are the commands' own words."""
    code = (
        "import sys; from charrnn.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('numba' in sys.modules, 'charrnn.commands.train' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "False False"
    overview = " ".join(done.stdout.split())  # as one line, whatever the terminal width wrapped
    for name, (module, function, summary) in COMMANDS.items():
        assert f" {name} {summary}" in overview
        command = getattr(importlib.import_module(module), function)
        assert command.name == name
        assert " ".join(command.help.split()).startswith(summary.rstrip("."))


def test_info_machine_says_what_this_machine_is_and_its_plans(capsys):
    code, stdout, stderr = run_main(capsys, "info", "--machine")
    assert code == 0, stderr
    for label in ("cpu:", "blas:", "thread budget:", "plan cache:"):
        assert label in stdout
    code, stdout, _ = run_main(capsys, "info", "--machine", "--json")
    details = json.loads(stdout)
    assert details["thread_budget"] >= 1 and isinstance(details["plans"], dict)
    code, _, stderr = run_main(capsys, "info")
    assert code != 0 and "needs a CHECKPOINT" in stderr and "Traceback" not in stderr
