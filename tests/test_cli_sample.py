"""`charrnn sample`: streamed UTF-8 output, options, one-line errors, and a closed pipe."""

import os
import subprocess
import sys

import pytest
from cli_runner import run_main
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.data import Vocab
from charrnn.model import Model, ModelConfig
from charrnn.sampling import beam_search, generate_text
from charrnn.saved import save_model

TEXT = "Ünïcødé «text» — with ümlauts, 10€ and plain words.\n" * 4


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint path, model, vocab) of a small untrained model whose vocabulary is non-ASCII."""
    vocab = Vocab.from_text(TEXT)
    model = Model(ModelConfig("lstm", len(vocab), 12, 2), seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    save_model(path, model, vocab, {"iteration": 7})
    return path, model, vocab


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_sample_prints_the_seeded_text_as_utf8(saved):
    path, model, vocab = saved
    result = run("sample", path, "-n", 60, "--seed", 9, "--prime", "Ünï")
    assert result.exit_code == 0
    expected = generate_text(model, vocab, 60, prime="Ünï", seed=9)[0]
    assert result.stdout_bytes.decode("utf-8") == expected + ("" if expected.endswith("\n") else "\n")
    assert run("sample", path, "-n", 60, "--seed", 9, "--prime", "Ünï").stdout_bytes == result.stdout_bytes


def test_sample_controls_reach_the_sampler(saved):
    path, model, vocab = saved
    result = run("sample", path, "-n", 40, "--seed", 1, "-t", 0.7, "--top-k", 5, "--top-p", 0.9)
    expected = generate_text(model, vocab, 40, seed=1, temperature=0.7, top_k=5, top_p=0.9)[0]
    assert result.stdout_bytes.decode("utf-8").rstrip("\n") == expected.rstrip("\n")
    greedy = run("sample", path, "-n", 30, "--argmax", "--prime", "with").stdout_bytes.decode("utf-8")
    assert greedy.rstrip("\n") == generate_text(model, vocab, 30, prime="with", argmax=True)[0].rstrip("\n")


def test_several_samples_come_one_after_another_with_separators(saved):
    path, model, vocab = saved
    out = run("sample", path, "-n", 20, "--seed", 4, "--num-samples", 3, "--prime", "plain").stdout_bytes.decode()
    texts = generate_text(model, vocab, 20, prime="plain", seed=4, num_samples=3)
    assert out.count("----- sample ") == 2
    assert "----- sample 2 of 3 -----\n" + texts[1] in out
    assert out.startswith(texts[0]) and texts[2] in out


def test_prime_file_output_file_and_beam(saved, tmp_path):
    path, model, vocab = saved
    prime_file = tmp_path / "prime.txt"
    prime_file.write_bytes("«text»".encode())
    target = tmp_path / "out.txt"
    result = run("sample", path, "-n", 25, "--prime-file", prime_file, "--seed", 2, "--output", target)
    assert result.stdout_bytes == b""
    assert target.read_text(encoding="utf-8").rstrip("\n") == generate_text(model, vocab, 25, prime="«text»", seed=2)[
        0
    ].rstrip("\n")
    beam = run("sample", path, "-n", 15, "--beam", 3, "--prime", "with").stdout_bytes.decode()
    assert beam == beam_search(model, vocab, "with", 15, 3) + "\n"
    prime_file.write_bytes("\ufeff«text»".encode("utf-8"))  # a byte-order mark marks the encoding: not text
    again = run("sample", path, "-n", 25, "--prime-file", prime_file, "--seed", 2).stdout_bytes
    assert again.decode("utf-8") == target.read_text(encoding="utf-8")


def test_drop_unknown_notes_what_was_dropped(saved, capsys):
    path, model, vocab = saved
    code, out, err = run_main(capsys, "sample", path, "-n", 10, "--seed", 1, "--prime", "wordsQ", "--drop-unknown")
    assert code == 0
    assert out.startswith("words")
    assert "note: dropped" in err and "Q" in err


def test_run_directory_resolves_to_its_best_or_latest_checkpoint(saved, tmp_path):
    _, model, vocab = saved
    run_dir = tmp_path / "run"
    save_model(run_dir / "ckpt_iter000010_val1.5000.npz", model, vocab, {"iteration": 10})
    other = Model(model.config, seed=99)
    save_model(run_dir / "ckpt_iter000020_val1.9000.npz", other, vocab, {"iteration": 20})
    best = run("sample", run_dir, "-n", 30, "--seed", 5).stdout_bytes
    latest = run("sample", run_dir, "-n", 30, "--seed", 5, "--which", "latest").stdout_bytes
    assert best.decode().rstrip("\n") == generate_text(model, vocab, 30, seed=5)[0].rstrip("\n")
    assert latest.decode().rstrip("\n") == generate_text(other, vocab, 30, seed=5)[0].rstrip("\n")


@pytest.mark.parametrize(
    "options, message",
    [
        (["-t", "0"], "temperature must be a number > 0"),
        (["-t", "-0.5"], "temperature"),
        (["-n", "0"], "length must be at least 1"),
        (["--top-p", "0"], "top-p must be in (0, 1]"),
        (["--top-p", "1.2"], "top-p"),
        (["--top-k", "-3"], "top-k must be >= 0"),
        (["--num-samples", "0"], "--num-samples must be at least 1"),
        (["--beam", "0"], "--beam must be at least 1"),
        (["--beam", "2", "--top-k", "3"], "--beam finds the single most likely text"),
        (["--prime", "a", "--prime-file", "x.txt"], "--prime and --prime-file"),
        (["--prime", "Zebra"], "never saw: Z b; remove them or pass --drop-unknown"),
        (["--prime-file", "/nonexistent/prime.txt"], "cannot read the prime file"),
    ],
)
def test_bad_options_are_one_line_errors(saved, capsys, options, message):
    path, _, _ = saved
    code, out, err = run_main(capsys, "sample", path, *options)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("charrnn: error: ")
    assert message in err


@pytest.mark.parametrize("beam", [[], ["--beam", "2"]])
def test_a_refused_prime_leaves_an_existing_output_file_alone(saved, capsys, tmp_path, beam):
    path, _, _ = saved
    target = tmp_path / "kept.txt"
    target.write_text("an earlier sample\n")
    code, _, err = run_main(capsys, "sample", path, "-n", 10, "--prime", "Zebra", "--output", target, *beam)
    assert code == 1 and "never saw" in err
    assert target.read_text() == "an earlier sample\n"


def test_output_cannot_overwrite_the_checkpoint_being_sampled(saved, capsys, tmp_path):
    path, model, vocab = saved
    run_dir = tmp_path / "run"
    checkpoint = save_model(run_dir / "ckpt_iter000010_val1.5000.npz", model, vocab, {"iteration": 10})
    before = checkpoint.read_bytes()
    for source in (checkpoint, run_dir):
        code, _, err = run_main(capsys, "sample", source, "-n", 10, "--output", checkpoint)
        assert code == 1 and err.count("\n") == 1 and "is the checkpoint being sampled" in err
    assert checkpoint.read_bytes() == before


def test_malformed_character_frequencies_fall_back_to_a_uniform_start(saved, capsys, tmp_path):
    _, model, vocab = saved
    damaged = save_model(tmp_path / "damaged.npz", model, vocab, {"unigram": ["x"] * len(vocab)})
    code, out, err = run_main(capsys, "sample", damaged, "-n", 20, "--seed", 3)
    assert code == 0 and "Traceback" not in err
    assert "note: the checkpoint's character frequencies (unigram) are malformed" in err
    assert out.rstrip("\n") == generate_text(model, vocab, 20, seed=3)[0].rstrip("\n")


def test_missing_checkpoint_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run_main(capsys, "sample", tmp_path / "nothing.npz")
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err


def _charrnn(*args, **popen):
    env = dict(os.environ, PYTHONIOENCODING="ascii", LC_ALL="C", LANG="C")
    return subprocess.Popen(
        [sys.executable, "-m", "charrnn", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def test_end_to_end_closed_pipe_and_ascii_locale(saved):
    path, model, vocab = saved
    process = _charrnn("sample", path, "-n", 200000, "--seed", 1, "--prime", "Ünï")
    head = process.stdout.read(64)  # like `| head -c 64`, then the reader goes away
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert head.startswith("Ünï".encode())  # UTF-8 even though the locale says ASCII
    assert process.returncode == 0  # a reader that stops early is not an error
    assert err == b""


def test_end_to_end_error_exit_code(saved):
    path, _, _ = saved
    process = _charrnn("sample", path, "--temperature", "0")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and out == b""
    assert err.decode().count("\n") == 1 and b"Traceback" not in err
