"""Held-out loss and sample novelty, and the `charrnn eval` / `charrnn info` commands."""

import json
import math
import time

import numpy as np
import pytest
from cli_runner import run_main
from click.testing import CliRunner

from charrnn.checkpoint import load_checkpoint
from charrnn.cli import cli
from charrnn.data import Vocab, load_corpus, split_corpus
from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate_loss, novel_substring_fractions
from charrnn.model import Model, ModelConfig
from charrnn.saved import save_model


def small_model(V=6, cell="lstm"):
    rng = np.random.default_rng(0)
    model = Model(ModelConfig(cell, V, 8, 2), seed=1)
    ids = rng.integers(0, V, size=503)
    return model, ids


def direct_loss(model, ids, streams):
    """Mean next-character loss read stream by stream with Model.step, from zero states."""
    n = len(ids)
    length = (n - 1) // streams
    total, count = 0.0, 0
    for stream in range(streams):
        part = ids[stream * length : stream * length + length + 1]
        state = model.initial_state(1)
        for position in range(length):
            logits = model.step([part[position]], state)[0].astype(np.float64)
            peak = logits.max()
            log_z = peak + math.log(np.exp(logits - peak).sum())
            total += log_z - logits[part[position + 1]]
            count += 1
    return total / count, count


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_equals_a_direct_step_by_step_computation(cell):
    model, ids = small_model(cell=cell)
    result = evaluate_loss(model, ids, batch_size=4, seq_length=7)  # 125 per stream: a partial last window
    expected, count = direct_loss(model, ids, streams=4)
    assert result["chars"] == count == 4 * 125
    assert result["loss_nats"] == pytest.approx(expected, rel=1e-5)
    assert result["bits_per_char"] == pytest.approx(result["loss_nats"] / math.log(2))


def test_loss_does_not_depend_on_the_window_length():
    model, ids = small_model()
    a = evaluate_loss(model, ids, batch_size=3, seq_length=5)["loss_nats"]
    b = evaluate_loss(model, ids, batch_size=3, seq_length=500)["loss_nats"]
    assert a == pytest.approx(b, rel=1e-5)


def test_loss_of_an_untrained_model_is_near_uniform():
    model, ids = small_model(V=6)
    assert evaluate_loss(model, ids)["loss_nats"] == pytest.approx(math.log(6), rel=0.05)


def test_loss_rejects_a_too_short_split():
    model, _ = small_model()
    with pytest.raises(CharrnnError, match="at least 2"):
        evaluate_loss(model, np.array([1]))


def test_novelty_on_a_hand_made_example():
    train = "abcdefgh"
    sample = "abcdXefgh"  # 4-grams: abcd bcdX cdXe dXef Xefg efgh -> 4 of 6 new
    fractions = novel_substring_fractions(sample, train, lengths=(1, 4, 5, 9, 10))
    assert fractions[1] == pytest.approx(1 / 9)
    assert fractions[4] == pytest.approx(4 / 6)
    assert fractions[5] == pytest.approx(1.0)  # every 5-gram of the sample contains the X
    assert fractions[9] == 1.0  # longer than the training text
    assert 10 not in fractions  # longer than the sample


def test_novelty_counts_repeated_substrings_at_every_position():
    fractions = novel_substring_fractions("aaaab", "aaaa", lengths=(2, 3))
    assert fractions[2] == pytest.approx(1 / 4)
    assert fractions[3] == pytest.approx(1 / 3)
    assert novel_substring_fractions("xyzxyz", "..xyzxyz..", lengths=(3, 6)) == {3: 0.0, 6: 0.0}


def test_novelty_works_on_bytes_and_ids_and_matches_a_set_based_count():
    rng = np.random.default_rng(4)
    train = "".join(rng.choice(list("abc "), size=3000))
    sample = "".join(rng.choice(list("abcd "), size=400))
    lengths = (4, 8, 12)
    fractions = novel_substring_fractions(sample, train, lengths)
    for n in lengths:
        seen = {train[i : i + n] for i in range(len(train) - n + 1)}
        grams = [sample[i : i + n] for i in range(len(sample) - n + 1)]
        assert fractions[n] == pytest.approx(sum(g not in seen for g in grams) / len(grams))
    assert novel_substring_fractions(sample.encode(), train.encode(), lengths) == fractions
    vocab = Vocab.from_text(train + sample)
    assert novel_substring_fractions(vocab.encode(sample), vocab.encode(train), lengths) == fractions


def test_novelty_does_not_confuse_zero_runs_of_different_length():
    ids_train = np.array([0, 0, 1, 2, 3])
    ids_sample = np.array([0, 0, 0])
    assert novel_substring_fractions(ids_sample, ids_train, lengths=(2, 3)) == {2: 0.0, 3: 1.0}


def test_novelty_is_fast_enough_for_a_megabyte_corpus():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 65, size=1_000_000)
    sample = np.concatenate([train[1000:2000], rng.integers(0, 65, size=1000)])
    started = time.perf_counter()
    fractions = novel_substring_fractions(sample, train)
    assert time.perf_counter() - started < 5.0
    assert 0.45 < fractions[20] <= 0.51  # the copied half is found, the random half is new


# ------------------------------------------------------------------------------ eval and info CLI
CORPUS = "".join(f"line {i % 7} of the corpus: {'ab' * (i % 5)} end.\n" for i in range(120))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(checkpoint, model-only checkpoint, corpus path, model, vocab) of a small model."""
    folder = tmp_path_factory.mktemp("eval")
    corpus_path = folder / "corpus.txt"
    corpus_path.write_text(CORPUS, encoding="utf-8")
    corpus = load_corpus(corpus_path)
    model = Model(ModelConfig("gru", len(corpus.vocab), 10, 2, dropout=0.1), seed=2)
    meta = {
        "iteration": 300,
        "epoch": 2.5,
        "val_loss": 1.25,
        "best_val_loss": 1.2,
        "train_seconds": 3725.0,
        "corpus": {
            "path": str(corpus_path),
            "encoding": "utf-8",
            "n_chars": corpus.n_chars,
            "val_frac": 0.2,
            "test_frac": 0.1,
        },
    }
    checkpoint = save_model(folder / "ckpt.npz", model, corpus.vocab, meta)
    bare = save_model(folder / "bare.npz", model, corpus.vocab)
    return checkpoint, bare, corpus_path, model, corpus.vocab


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def test_eval_on_a_split_matches_evaluate_loss(run):
    checkpoint, _, corpus_path, model, vocab = run
    splits = split_corpus(load_corpus(corpus_path).ids, 0.2, 0.1)
    for split in ("val", "test"):
        result = json.loads(invoke("eval", checkpoint, "--split", split, "--json"))
        expected = evaluate_loss(model, splits[split])
        assert result["split"] == split
        assert result["loss_nats"] == pytest.approx(expected["loss_nats"])
        assert result["bits_per_char"] == pytest.approx(expected["bits_per_char"])
        assert result["chars"] == expected["chars"]
    text = invoke("eval", checkpoint)  # val by default
    assert "val split of" in text and "nats/char" in text and "bits/char" in text


def test_eval_on_a_file_reports_unknown_characters(run, tmp_path, capsys):
    checkpoint, _, _, model, vocab = run
    target = tmp_path / "held_out.txt"
    target.write_text("line 3 of the corpus: abab end.\nQQ line 9 ☃\n", encoding="utf-8")
    code, out, err = run_main(capsys, "eval", checkpoint, target)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "4 characters outside the model's vocabulary (9 ×1, Q ×2, ☃ ×1)" in err and "--skip-unknown" in err
    result = json.loads(invoke("eval", checkpoint, target, "--skip-unknown", "--json"))
    kept = "line 3 of the corpus: abab end.\n line  \n"
    assert result["file"] == str(target)
    assert result["loss_nats"] == pytest.approx(evaluate_loss(model, vocab.encode(kept))["loss_nats"])


def test_eval_novelty_table(run, tmp_path):
    checkpoint, _, _, _, _ = run
    sample = tmp_path / "sample.txt"
    sample.write_text("line 3 of the corpus: end.\nzzzzzzzzzzzzzzzzzzzzzzzz", encoding="utf-8")
    text = invoke("eval", checkpoint, "--novelty", sample)
    assert "novelty of" in text and "nats/char" not in text  # only the table without FILE/--split
    assert len([line for line in text.splitlines() if line.strip().endswith("%")]) == 9
    result = json.loads(invoke("eval", checkpoint, "--split", "val", "--novelty", sample, "--json"))
    assert set(result) >= {"loss_nats", "bits_per_char", "chars", "split", "novelty"}
    assert 0.0 < result["novelty"]["4"] < result["novelty"]["20"] <= 1.0


def test_eval_without_the_corpus_is_a_clear_error(run, capsys):
    _, bare, _, _, _ = run
    code, _, err = run_main(capsys, "eval", bare)
    assert code == 1 and err.count("\n") == 1 and "pass a text file instead" in err


@pytest.mark.parametrize(
    "corpus, phrase",
    [
        ("a string", "not available; pass a text file instead"),
        ({"path": 5}, "not available; pass a text file instead"),
    ],
)
def test_eval_with_a_malformed_corpus_record_is_a_clear_error(run, capsys, tmp_path, corpus, phrase):
    _, _, _, model, vocab = run
    damaged = save_model(tmp_path / "damaged.npz", model, vocab, {"corpus": corpus})
    code, _, err = run_main(capsys, "eval", damaged)
    assert code == 1 and err.count("\n") == 1 and phrase in err and "Traceback" not in err


def test_eval_of_a_split_the_run_did_not_have(run, capsys, tmp_path):
    checkpoint, _, corpus_path, model, vocab = run
    _, meta = load_checkpoint(checkpoint)
    meta["corpus"]["test_frac"] = 0.0
    no_test = save_model(tmp_path / "no_test.npz", model, vocab, meta)
    code, _, err = run_main(capsys, "eval", no_test, "--split", "test")
    assert code == 1 and err.count("\n") == 1
    assert "test split" in err and "is empty" in err and "pass a text file instead" in err


def test_info_of_a_one_layer_bytes_model(capsys, tmp_path):
    vocab = Vocab.from_text(bytes(range(0, 256, 3)), "bytes")
    model = Model(ModelConfig("rnn", len(vocab), 5, 1, dropout=0.2, weight_drop=0.25), seed=0)
    path = save_model(tmp_path / "bytes.npz", model, vocab, {"corpus": {"path": "data.bin", "n_chars": 12345}})
    code, out, _ = run_main(capsys, "info", path)
    assert code == 0
    assert "rnn, 1 layer x 5 hidden, dropout 0.2, weight drop 0.25" in out and "data.bin (12,345 bytes)" in out


def test_info_json_keys_and_text(run):
    checkpoint, bare, corpus_path, model, vocab = run
    details = json.loads(invoke("info", checkpoint, "--json"))
    assert details["cell"] == "gru" and details["layers"] == 2 and details["hidden"] == 10
    assert details["dropout"] == 0.1 and details["weight_drop"] == 0.0
    assert details["parameters"] == model.num_parameters
    assert details["vocab_size"] == len(vocab) and details["vocab"] == vocab.printable()
    assert details["iteration"] == 300 and details["epoch"] == 2.5
    assert details["best_val_loss_nats"] == 1.2
    assert details["best_val_loss_bits"] == pytest.approx(1.2 / math.log(2))
    assert details["val_loss_nats"] == 1.25 and details["train_seconds"] == 3725.0
    assert details["corpus"] == str(corpus_path) and details["format_version"] == 1
    text = invoke("info", checkpoint)
    assert "gru, 2 layers x 10 hidden" in text and "1h 02m 05s" in text and "1.2000 nats/char" in text
    bare_details = json.loads(invoke("info", bare, "--json"))
    assert bare_details["iteration"] is None and bare_details["best_val_loss_nats"] is None
    assert bare_details["parameters"] == model.num_parameters
    assert "iteration:" in invoke("info", bare)
