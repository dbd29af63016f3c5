"""`charrnn train` and `charrnn corpus` from the command line: bad input gives one line and exit 1."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_runner import run_main

from charrnn.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from charrnn.data import Vocab
from charrnn.model import Model, ModelConfig
from charrnn.saved import save_model

SMALL = [
    "--hidden",
    "16",
    "--layers",
    "1",
    "--batch-size",
    "4",
    "--seq-length",
    "16",
    "--eval-every",
    "10",
    "--sample-length",
    "20",
    "--print-every",
    "5",
]


run_cli = run_main


def assert_one_line_error(code, err, *phrases):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_train_then_resume_from_the_command_line(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "10", "--out", str(out))
    assert code == 0
    assert "iter      5/10" in stdout and "val loss" in stdout
    code, stdout, _ = run_cli(capsys, "train", "--resume", str(out), "--max-iters", "20")
    assert code == 0
    assert "resumed from" in stdout and "iter     20/20" in stdout


def test_eval_reads_a_run_as_its_own_evaluations_did(tiny_corpus, tmp_path, capsys):
    """Batch 4 and 16-character windows, not eval's fallback 50 x 100: the run's logged loss, to the bit."""
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "10", "--out", str(out))
    assert code == 0
    logged = load_checkpoint(out, which="latest")[1]["val_loss"]
    code, stdout, err = run_cli(capsys, "eval", str(out), "--split", "val", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["loss_nats"] == logged and (result["batch_size"], result["seq_length"]) == (4, 16)
    code, stdout, _ = run_cli(capsys, "eval", str(out), "--batch-size", "3", "--seq-length", "5")
    assert code == 0 and "(3 streams, 5-character windows)" in stdout


@pytest.mark.parametrize("recorded", [None, "4", True, 2.5, 0, float("inf"), float("nan"), [4]])
def test_eval_falls_back_to_50_streams_of_100_when_the_run_records_no_usable_layout(recorded):
    from charrnn.commands.evaluate import eval_layout

    assert eval_layout({"train_config": {"batch_size": recorded, "seq_length": recorded}}) == (50, 100)
    assert eval_layout({"train_config": "damaged"}) == eval_layout({}) == (50, 100)
    assert eval_layout({"train_config": {"batch_size": 4.0, "seq_length": 16}}) == (4, 16)
    assert eval_layout({"train_config": {"batch_size": 4}}, batch_size=7, seq_length=9) == (7, 9)


@pytest.mark.parametrize(
    "content, phrases",
    [
        (b"", ("empty",)),
        (b"\x00\x01\x02\xff" * 200, ("--encoding bytes",)),
        (b"caf\xe9 au lait " * 50, ("not valid UTF-8", "--encoding bytes")),
        (b"abcab", ("needs at least", "--batch-size")),
    ],
)
def test_unusable_corpora_are_refused(tmp_path, capsys, content, phrases):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    code, _, err = run_cli(capsys, "train", str(corpus), *SMALL, "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, *phrases)


def test_missing_file_and_bad_options(tmp_path, capsys, tiny_corpus):
    code, _, err = run_cli(capsys, "train", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "nope.txt")
    code, _, err = run_cli(capsys, "train", str(tiny_corpus), "--dropout", "1.5", "--out", str(tmp_path / "r2"))
    assert_one_line_error(code, err, "--dropout")
    code, _, err = run_cli(capsys, "train", str(tiny_corpus), "--model", "transformer")
    assert code == 2 and "transformer" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "options, phrase",
    [
        (["--max-minutes", "nan"], "--max-minutes must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number"),
        (["--val-frac", "1.5"], "fractions must leave some training text"),
        (["--test-frac", "0.95", "--val-frac", "0.1"], "fractions must leave some training text"),
    ],
)
def test_refused_options_leave_no_run_directory(tmp_path, capsys, tiny_corpus, options, phrase):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", str(tiny_corpus), *SMALL, *options, "--out", str(out))
    assert_one_line_error(code, err, phrase)
    assert not out.exists()


def test_a_cosine_without_an_end_or_a_budget_is_refused(tmp_path, capsys, tiny_corpus):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--lr-schedule", "cosine", "--out", str(out))
    assert_one_line_error(
        code, err, "--lr-schedule cosine needs an end", "--max-iters", "--lr-decay-iters", "--max-minutes"
    )
    assert not out.exists()


def test_help_describes_the_time_budgeted_cosine(capsys):
    code, stdout, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    text = " ".join(re.sub(r"-\n\s*", "-", stdout).split())  # click also wraps after hyphens
    assert "fixes (and logs) its end so that it finishes within this budget" in text
    assert "--resume keeps that end" in text
    assert "or an end fitted to --max-minutes" in text and "without either, fitted to --max-minutes" in text
    assert "needs no run length" in text


def test_a_refused_corpus_leaves_no_run_directory(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    code, _, err = run_cli(capsys, "train", str(empty), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "empty")
    assert not (tmp_path / "run").exists()


def test_resume_says_when_latest_names_a_deleted_checkpoint(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "20", "--out", str(out))
    assert code == 0
    newest = sorted(out.glob("ckpt_iter000020_*.npz"))
    assert len(newest) == 1
    newest[0].unlink()
    code, stdout, _ = run_cli(capsys, "train", "--resume", str(out), "--max-iters", "21")
    assert code == 0
    assert f"latest.json names {newest[0].name}, which is gone" in stdout
    assert "resumed from " + str(out / "ckpt_iter000010_") in stdout and "at iteration 10" in stdout


def test_resume_refuses_to_write_into_another_runs_directory(tiny_corpus, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        code, _, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "10", "--out", str(out))
        assert code == 0
    before = sorted(path.name for path in second.iterdir())
    code, _, err = run_cli(capsys, "train", "--resume", str(first), "--out", str(second), "--keep-last", "1")
    assert_one_line_error(code, err, "already holds checkpoints")
    assert sorted(path.name for path in second.iterdir()) == before


@pytest.mark.parametrize(
    "meta, phrase",
    [
        ({"train_config": "lstm"}, "no usable training configuration"),
        ({"train_config": {"hidden": 16}}, "does not record its corpus"),
    ],
)
def test_resume_from_damaged_training_metadata(tmp_path, capsys, meta, phrase):
    vocab = Vocab.from_text("ab")
    run = tmp_path / "run"
    save_model(run / "ckpt_iter000010.npz", Model(ModelConfig("lstm", 2, 4, 1)), vocab, {"iteration": 10, **meta})
    code, _, err = run_cli(capsys, "train", "--resume", str(run))
    assert_one_line_error(code, err, phrase)


def test_resume_from_damaged_progress_metadata(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "10", "--out", str(out))
    assert code == 0
    arrays, meta = load_checkpoint(out, which="latest")
    save_checkpoint(resolve_checkpoint(out, "latest"), arrays, {**meta, "first_loss": "high"})
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "--max-iters", "12")
    assert_one_line_error(code, err, "damaged checkpoint and cannot resume training")


def test_resume_without_a_checkpoint(tmp_path, capsys):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "--resume", str(empty))
    assert_one_line_error(code, err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere, so no directory is unwritable")
def test_unwritable_output_directory(tiny_corpus, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--out", str(locked / "run"))
    assert_one_line_error(code, err, "output directory")


def test_output_path_that_is_a_file(tiny_corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--out", str(blocker / "run"))
    assert_one_line_error(code, err, "output directory")


def test_a_real_process_exits_cleanly_on_bad_input(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "charrnn", "train", str(empty)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_ctrl_c_in_a_real_process_leaves_a_resumable_checkpoint(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(tiny_corpus),
        *SMALL,
        "--max-iters",
        "100000",
        "--eval-every",
        "1000",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait until training is under way
        if line.startswith("iter"):
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "saving a checkpoint" in stdout
    arrays, meta = load_checkpoint(out, which="latest")
    assert meta["iteration"] > 0
    assert meta["loader"]["position"] % 16 == 0
    assert not list(out.glob("*.tmp*"))


def test_corpus_list_and_offline_build(tmp_path, capsys, monkeypatch):
    code, stdout, _ = run_cli(capsys, "corpus", "--list")
    assert code == 0 and "tinyshakespeare" in stdout and "python-stdlib" in stdout
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "corpus", "default")
    path = stdout.strip()
    assert code == 0 and os.path.getsize(path) > 100_000


def test_init_from_fine_tunes_on_a_corpus_with_fewer_symbols(tiny_corpus, tmp_path, capsys):
    base = tmp_path / "base"
    code, _, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "10", "--out", str(base))
    assert code == 0
    text = tiny_corpus.read_text()
    narrower = tmp_path / "narrower.txt"  # drops a symbol the base model knows
    dropped = sorted(set(text))[-1]
    narrower.write_text(text.replace(dropped, " ") * 2)
    tuned = tmp_path / "tuned"
    # No --hidden or --layers: the checkpoint's 1x16 shape is taken, not the 2x128 defaults.
    code, _, err = run_cli(
        capsys,
        "train",
        str(narrower),
        "--init-from",
        str(base),
        "--batch-size",
        "4",
        "--seq-length",
        "16",
        "--eval-every",
        "10",
        "--max-iters",
        "1",
        "--out",
        str(tuned),
    )
    assert code == 0, err
    base_arrays, base_meta = load_checkpoint(base, which="best")
    _, meta = load_checkpoint(tuned, which="latest")
    assert meta["model"]["hidden"] == 16 and meta["model"]["layers"] == 1
    assert meta["vocab"] == base_meta["vocab"] and meta["iteration"] == 1
    assert meta["train_config"]["init_from"] == str(base)
    # One Adam step from the base weights moves each of them by at most about the learning rate.
    tuned_arrays, _ = load_checkpoint(tuned, which="latest")
    lr = meta["train_config"]["lr"]
    params = [name for name in base_arrays if name.startswith("param/")]
    assert params and all(np.abs(tuned_arrays[n] - base_arrays[n]).max() <= 1.01 * lr for n in params)
    code, stdout, err = run_cli(capsys, "eval", str(tuned), "--split", "val", "--json")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--resume", str(tuned), "--max-iters", "3")
    assert code == 0, err
    assert load_checkpoint(tuned, which="latest")[1]["iteration"] == 3


def test_init_from_refuses_new_symbols_and_another_shape(tiny_corpus, tmp_path, capsys):
    base = tmp_path / "base"
    code, _, _ = run_cli(capsys, "train", str(tiny_corpus), *SMALL, "--max-iters", "2", "--out", str(base))
    assert code == 0
    wider = tmp_path / "wider.txt"
    wider.write_text(tiny_corpus.read_text() + "~ Ω\n")
    code, _, err = run_cli(capsys, "train", str(wider), "--init-from", str(base), "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "has symbols the --init-from model never saw: ~ Ω")
    code, _, err = run_cli(
        capsys, "train", str(tiny_corpus), "--init-from", str(base), "--hidden", "32", "--out", str(tmp_path / "b")
    )
    assert_one_line_error(code, err, "lstm 1x16", "drop --model, --layers and --hidden")
    code, _, err = run_cli(
        capsys, "train", str(tiny_corpus), "--init-from", str(tmp_path / "none"), "--out", str(tmp_path / "c")
    )
    assert code == 1 and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_prepared_directory_the_cached_file_and_todays_loader_train_the_same_model(
    tiny_corpus, tmp_path, capsys, monkeypatch
):
    from charrnn.saved import load_model

    code, _, err = run_cli(capsys, "prepare", tiny_corpus, "--out", tmp_path / "prepared", "--val-frac", "0.2")
    assert code == 0, err
    runs = {"dir": tmp_path / "prepared", "cached": tiny_corpus, "in-memory": tiny_corpus}
    for name, corpus in runs.items():
        if name == "in-memory":
            monkeypatch.setenv("CHARRNN_CACHE", "off")
        code, _, err = run_cli(
            capsys, "train", corpus, "--out", tmp_path / name, "--max-iters", "6", "--val-frac", "0.2", *SMALL
        )
        assert code == 0, err
    models = {name: load_model(tmp_path / name, "latest") for name in runs}
    first = models["dir"]
    for name, (model, vocab, meta) in models.items():
        assert (
            vocab == first[1]
            and meta["val_loss"] == first[2]["val_loss"]
            and meta["corpus"]["sha256"] == first[2]["corpus"]["sha256"]
        )
        for param, value in model.params.items():
            assert np.array_equal(value, first[0].params[param]), (name, param)
    code, out, err = run_cli(
        capsys,
        "eval",
        tmp_path / "dir",
        "--which",
        "latest",
        "--split",
        "val",
        "--batch-size",
        "4",
        "--seq-length",
        "16",
    )
    assert code == 0 and f"loss {first[2]['val_loss']:.4f}" in out, err


def test_a_prepared_directory_sets_the_encoding_and_fractions_unless_given(tiny_corpus, tmp_path, capsys):
    run_cli(capsys, "prepare", tiny_corpus, "--out", tmp_path / "p", "--encoding", "bytes", "--val-frac", "0.25")
    code, _, err = run_cli(capsys, "train", tmp_path / "p", "--out", tmp_path / "run", "--max-iters", "2", *SMALL)
    assert code == 0, err
    meta = load_checkpoint(resolve_checkpoint(tmp_path / "run", "latest"))[1]
    assert meta["corpus"]["encoding"] == "bytes" and meta["train_config"]["val_frac"] == 0.25
    code, _, err = run_cli(capsys, "train", tmp_path / "p", "--encoding", "utf-8", "--out", tmp_path / "r2", *SMALL)
    assert_one_line_error(code, err, "was prepared as bytes but --encoding utf-8 was asked for")
