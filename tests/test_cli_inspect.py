"""`charrnn inspect` end to end, on checkpoints built here, one with hand-planted cells."""

import re
import shlex

import numpy as np
import pytest
from cli_runner import run_main
from conftest import synthetic_text

from charrnn.checkpoint import checkpoint_name
from charrnn.corpora import file_sha256
from charrnn.data import Vocab, split_corpus
from charrnn.features import bracket_depth, builtin_features, quote_feature
from charrnn.inspection import load_activations_npz, rank_cells, record_activations
from charrnn.model import Model, ModelConfig
from charrnn.saved import save_model

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PAREN_CELL, QUOTE_CELL = 0, 1  # planted in layer 0
LAYERS, HIDDEN = 2, 6


def planted_lstm(vocab, layers=LAYERS, hidden=HIDDEN):
    """A random LSTM whose layer-0 cells 0 and 1 are set by hand.

    Gate k of cell j is column k*H + j (order i, f, o, g). Saturating biases of +-15 make a gate
    0 or 1 to within 3e-7.
    PAREN_CELL: f = 1 and o = 1 always; i = 1 only on "(" or ")", where g = +1 or -1. So c counts
        the open parentheses exactly.
    QUOTE_CELL: on '"' f = 0 (forget) and the input gate opens only if the cell is currently off:
        i = sigmoid(3 - 10 h) is 0.95 when h = 0 and 0.01 when h = tanh(0.95). g = 1 always, so c
        toggles between ~0.95 (inside a quotation) and ~0.01 (outside); elsewhere f = 1, i = 0 hold it.
    """
    model = Model(ModelConfig("lstm", len(vocab), hidden, layers), seed=3)
    W_x, W_h, b = (model.params[f"layer0.{name}"] for name in ("W_x", "W_h", "b"))
    i, f, o, g = (lambda j, k=k: k * hidden + j for k in range(4))
    idx = {ch: vocab.encode(ch)[0] for ch in '()"'}
    for j in (PAREN_CELL, QUOTE_CELL):
        for column in (i(j), f(j), o(j), g(j)):
            W_x[:, column] = 0.0
            W_h[:, column] = 0.0
        b[i(j)], b[f(j)], b[o(j)], b[g(j)] = -15.0, 15.0, 15.0, 0.0
    W_x[[idx["("], idx[")"]], i(PAREN_CELL)] = 30.0
    W_x[idx["("], g(PAREN_CELL)] = 10.0
    W_x[idx[")"], g(PAREN_CELL)] = -10.0
    b[g(QUOTE_CELL)] = 15.0
    W_x[idx['"'], f(QUOTE_CELL)] = -30.0
    W_x[idx['"'], i(QUOTE_CELL)] = 18.0
    W_h[QUOTE_CELL, i(QUOTE_CELL)] = -10.0
    return model


def corpus_meta(path, encoding="utf-8"):
    """The "corpus" entry training writes, so the default validation-split text can be found."""
    n_chars = len(path.read_bytes()) if encoding == "bytes" else len(path.read_text(encoding="utf-8"))
    return {
        "corpus": {
            "path": str(path),
            "encoding": encoding,
            "sha256": file_sha256(path),
            "n_chars": n_chars,
            "val_frac": 0.1,
            "test_frac": 0.0,
        }
    }


def make_checkpoint(directory, cell="lstm", text=None, name="model.npz"):
    """(checkpoint path, model, vocab, corpus path): a model of `cell` over a small corpus file."""
    directory.mkdir(parents=True, exist_ok=True)
    text = synthetic_text(3000, seed=1) if text is None else text
    corpus = directory / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    vocab = Vocab.from_text(text)
    if cell == "lstm":
        model = planted_lstm(vocab)
    else:
        model = Model(ModelConfig(cell, len(vocab), HIDDEN, LAYERS), seed=3)
    path = directory / name
    save_model(path, model, vocab, {**corpus_meta(corpus), "iteration": 100, "val_loss": 1.5})
    return path, model, vocab, corpus


def run(argv, capsys):
    """(exit code, stdout, stderr) of `charrnn ARGV`."""
    return run_main(capsys, *argv)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("lstm"))


# --- the planted cells -------------------------------------------------------------------------


def test_planted_cells_do_what_they_were_built_for(checkpoint):
    _, model, vocab, corpus = checkpoint
    text = corpus.read_text(encoding="utf-8")
    recorded = model.record(vocab.encode(text).astype(np.int64))
    np.testing.assert_allclose(recorded["c"][:, 0, PAREN_CELL], bracket_depth(text, "()"), atol=1e-3)
    inside = quote_feature(text).astype(bool)
    quote_c = recorded["c"][:, 0, QUOTE_CELL]
    assert inside.any() and (~inside).any()
    assert quote_c[inside].min() > 0.9 and quote_c[~inside].max() < 0.1


def test_ranking_puts_the_planted_cells_first(checkpoint):
    _, model, vocab, corpus = checkpoint
    text = corpus.read_text(encoding="utf-8")
    activations = record_activations(model, vocab.encode(text))
    ranking = rank_cells(activations, builtin_features(text), ["h", "c"], top=3, one_per_cell=True)
    best = {}
    for row in ranking:
        best.setdefault(row.feature, row)
    for feature, cell in (("in_double_quote", QUOTE_CELL), ("paren_depth", PAREN_CELL), ("bracket_depth", PAREN_CELL)):
        assert (best[feature].layer, best[feature].cell) == (0, cell)
        assert abs(best[feature].correlation) > 0.9
        runner_up = [row for row in ranking if row.feature == feature][1]
        assert abs(runner_up.correlation) < abs(best[feature].correlation)


# --- files -------------------------------------------------------------------------------------


def test_writes_every_file_and_the_npz_holds_exactly_what_the_model_records(checkpoint, tmp_path, capsys):
    path, model, vocab, corpus = checkpoint
    out = tmp_path / "out"
    code, stdout, stderr = run(["inspect", path, "--text-file", corpus, "--out", out], capsys)
    assert code == 0, stderr
    for name in ("activations.npz", "index.html", "gate_saturation.png", "heatmap.png"):
        assert (out / name).stat().st_size > 0
        assert f"wrote {out / name}" in stdout
    for name in ("gate_saturation.png", "heatmap.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    activations, text, symbols, meta = load_activations_npz(out / "activations.npz")
    assert text == corpus.read_text(encoding="utf-8")[:3000]
    assert symbols == vocab.symbols
    expected = model.record(vocab.encode(text).astype(np.int64))
    np.testing.assert_array_equal(activations["h"], expected["h"])
    np.testing.assert_array_equal(activations["c"], expected["c"])
    np.testing.assert_array_equal(activations["f"], expected["gates"][:, :, HIDDEN : 2 * HIDDEN])
    np.testing.assert_array_equal(activations["char_ids"], vocab.encode(text))
    assert meta["config"]["cell"] == "lstm" and meta["iteration"] == 100 and meta["text"] == str(corpus)
    assert meta["ranking"][0]["feature"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert '"text":' in html and "in_double_quote" in html


def test_ranking_is_printed_with_commands_that_show_each_cell(checkpoint, tmp_path, capsys):
    path, _, _, corpus = checkpoint
    code, stdout, stderr = run(
        ["inspect", path, "--text-file", corpus, "--out", tmp_path / "o", "--top", "2", "--feature", "[aeiou]"], capsys
    )
    assert code == 0, stderr
    rows = [line.split() for line in stdout.splitlines() if "charrnn inspect" in line]
    by_feature = {}
    for row in rows:
        by_feature.setdefault(row[0], []).append(row)
    assert all(len(group) <= 2 for group in by_feature.values())
    quote = by_feature["in_double_quote"][0]
    assert quote[1] == f"0:{QUOTE_CELL}" and quote[2] in ("h", "c") and float(quote[3]) > 0.9
    assert by_feature["paren_depth"][0][1] == f"0:{PAREN_CELL}"
    assert "regex:[aeiou]" in by_feature
    assert "constant over this text (not ranked): " in stdout and "in_hash_comment" in stdout
    # The printed command, run as printed, shows that cell.
    line = next(line for line in stdout.splitlines() if line.split()[0] == "regex:[aeiou]")
    feature, cell, quantity, _ = line.split()[:4]
    command = shlex.split(line[line.index("charrnn inspect") :])
    assert command[:3] == ["charrnn", "inspect", str(path)] and "--feature" in command
    code, view, stderr = run(command[1:] + ["--no-color"], capsys)
    assert code == 0, stderr
    layer, cell = cell.split(":")
    assert view.startswith(f"layer {layer} cell {cell} {quantity}: ")
    assert ANSI.sub("", view).split("\n", 1)[1].rstrip("\n") == corpus.read_text(encoding="utf-8")[:3000]


def test_default_text_is_the_validation_split_and_outputs_go_into_the_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    saved, _, _, corpus = make_checkpoint(run_dir)
    saved.rename(run_dir / checkpoint_name(100, 1.5))
    code, stdout, stderr = run(["inspect", run_dir, "--max-chars", "200"], capsys)
    assert code == 0, stderr
    _, text, _, meta = load_activations_npz(run_dir / "inspect" / "activations.npz")
    full = corpus.read_text(encoding="utf-8")
    val = split_corpus(np.arange(len(full)), 0.1)["val"]
    assert text == full[val[0] : val[0] + 200]
    assert meta["text"] == f"validation split of {corpus}"
    assert "over 200 character(s)" in stdout


def test_checkpoint_file_outputs_default_to_the_working_directory(checkpoint, tmp_path, capsys, monkeypatch):
    path, _, _, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(["inspect", path, "--text", 'so "hi" (now)\n' * 5], capsys)
    assert code == 0, stderr
    assert (tmp_path / "inspect-model" / "index.html").is_file()


def test_rnn_gets_no_gate_plot_and_gru_has_its_own_gates(tmp_path, capsys):
    path, *_ = make_checkpoint(tmp_path / "rnn", cell="rnn")
    code, stdout, stderr = run(["inspect", path, "--out", tmp_path / "rnn-out"], capsys)
    assert code == 0, stderr
    assert "no gate_saturation.png: a plain RNN has no gates" in stdout
    assert not (tmp_path / "rnn-out" / "gate_saturation.png").exists()
    assert (tmp_path / "rnn-out" / "heatmap.png").is_file()
    path, *_ = make_checkpoint(tmp_path / "gru", cell="gru")
    code, stdout, stderr = run(["inspect", path, "--cell", "1:2", "--quantity", "z", "--no-color"], capsys)
    assert code == 0, stderr
    assert stdout.startswith("layer 1 cell 2 z:")


# --- the terminal view -------------------------------------------------------------------------


def test_cell_view_colours_each_character_and_writes_nothing(checkpoint, tmp_path, capsys, monkeypatch):
    path, _, _, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLORTERM", "truecolor")
    text = 'out "in side" out\nmore "in" x'
    code, stdout, stderr = run(
        ["inspect", path, "--text", text, "--cell", f"0:{QUOTE_CELL}", "--quantity", "c", "--color"], capsys
    )
    assert code == 0, stderr
    header, view = stdout.split("\n", 1)
    assert header.startswith(f"layer 0 cell {QUOTE_CELL} c:") and "best match: in_double_quote (r = +1.00)" in header
    assert ANSI.sub("", view).rstrip("\n") == text
    # Background of each character: deep red inside the quotes, near white outside.
    backgrounds = re.findall(r"\x1b\[48;[0-9;]*m\x1b\[38;5;\d+m(.)", view.replace("\x1b[0m\n", ""))
    assert "".join(backgrounds) == text.replace("\n", "")
    colours = [tuple(map(int, rgb)) for rgb in re.findall(r"\x1b\[48;2;(\d+);(\d+);(\d+)m", view)]
    inside = quote_feature(text)[np.array([ch != "\n" for ch in text])]
    assert len(colours) == len(inside)
    for (red, green, blue), is_inside in zip(colours, inside):
        assert (red > 170 and green < 40 and blue < 60) if is_inside else min(red, green, blue) > 235
    assert list(tmp_path.iterdir()) == []
    code, plain, stderr = run(["inspect", path, "--text", text, "--cell", "0:1", "--no-color"], capsys)
    assert "\x1b" not in plain and plain.split("\n", 1)[1].rstrip("\n") == text and stderr == ""
    code, piped, stderr = run(["inspect", path, "--text", text, "--cell", "0:1"], capsys)  # not a terminal
    assert piped == plain and "add --color to force them" in stderr


# --- mistakes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (["--cell", "2:0"], "layer 2 does not exist; this model has layers 0..1"),
        (["--cell", "0:6"], "cell 6 does not exist; each layer has cells 0..5"),
        (["--cell", "seven"], "'seven' is not LAYER:CELL"),
        (["--cell", "0:1", "--quantity", "r"], "a lstm model has no 'r'; choose one of h, c, tanh_c, i, f, o, g"),
        (["--quantity", "volume"], "'volume' is not one of"),
        (["--feature", "(unclosed"], "invalid regular expression '(unclosed'"),
        (["--text", ""], "the text from --text is empty"),
        (
            ["--text", "hello\u20ac\u00e9"],
            "2 symbol(s) the model never saw: \u00e9 \u20ac; remove them or pass --drop-",
        ),
        (["--text", "\u20ac\u00e9", "--drop-unknown"], "empty after dropping unknown symbols"),
        (["--text", "x", "--text-file", "y"], "give --text or --text-file, not both"),
        (["--text-file", "/nonexistent/file.txt"], "text file /nonexistent/file.txt does not exist"),
        (["--max-chars", "0"], "0 is not in the range x>=1"),
    ],
)
def test_mistakes_are_one_line_errors(checkpoint, tmp_path, capsys, monkeypatch, options, message):
    path, *_ = checkpoint
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run(["inspect", path, *options], capsys)
    assert code != 0
    assert message in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_characters_can_be_dropped(checkpoint, tmp_path, capsys):
    path, *_ = checkpoint
    code, stdout, stderr = run(
        ["inspect", path, "--text", '\u00e9so "hi"\r\n', "--drop-unknown", "--cell", "0:1", "--no-color"], capsys
    )
    assert code == 0, stderr
    assert "dropped 2 unknown symbol(s): \\r \u00e9" in stderr
    assert stdout.split("\n", 1)[1].rstrip("\n") == 'so "hi"'


def test_missing_training_corpus_asks_for_a_text(tmp_path, capsys):
    path, _, _, corpus = make_checkpoint(tmp_path / "gone")
    corpus.unlink()
    code, _, stderr = run(["inspect", path], capsys)
    assert code == 1
    assert "is not available" in stderr and "--text-file FILE or --text TEXT" in stderr


def test_bytes_model_shows_one_character_per_byte(tmp_path, capsys):
    text = "caf\u00e9 (ok) " * 40
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    vocab = Vocab.from_text(text.encode("utf-8"), "bytes")
    model = Model(ModelConfig("gru", len(vocab), 4, 1), seed=0)
    path = tmp_path / "bytes.npz"
    save_model(path, model, vocab, corpus_meta(corpus, "bytes"))
    code, stdout, stderr = run(["inspect", path, "--text", "caf\u00e9", "--cell", "0:0", "--no-color"], capsys)
    assert code == 0, stderr
    assert stdout.split("\n", 1)[1].rstrip("\n") == "caf\ufffd\ufffd"  # the two bytes of the e-acute
    code, stdout, stderr = run(["inspect", path, "--out", tmp_path / "out"], capsys)
    assert code == 0, stderr
    _, shown, symbols, _ = load_activations_npz(tmp_path / "out" / "activations.npz")
    n_bytes = len(text.encode("utf-8"))
    assert len(shown) == n_bytes - int(n_bytes * 0.9)  # the validation split, one character per byte
    assert all(isinstance(symbol, int) for symbol in symbols)
