import re
from types import SimpleNamespace

import numpy as np
import pytest

from charrnn.errors import CharrnnError
from charrnn.features import bracket_depth, quote_feature
from charrnn.inspection import (
    GateSaturation,
    RankedCell,
    ansi_cell_view,
    busiest_window,
    cell_quantities,
    gate_saturation,
    load_activations_npz,
    quantities,
    rank_cells,
    record_activations,
    save_activations_npz,
    select_cells,
    softmax,
    top_predictions,
    write_output,
)

BLOCKS = {"lstm": 4, "gru": 3, "rnn": 1, "lnlstm": 4}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FakeModel:
    """Duck-typed stand-in for charrnn.model.Model: gate block k holds the value k/10 + time/1000."""

    def __init__(self, cell, layers=2, hidden=3, vocab_size=7):
        self.config = SimpleNamespace(cell=cell, layers=layers, hidden=hidden, vocab_size=vocab_size)

    def record(self, char_ids):
        T, L, H, V = len(char_ids), self.config.layers, self.config.hidden, self.config.vocab_size
        G = BLOCKS[self.config.cell]
        rng = np.random.default_rng(1)
        time = np.arange(T)[:, None, None] / 1000
        gates = np.concatenate([np.full((T, L, H), k / 10) + time for k in range(G)], axis=2)
        c = rng.normal(0, 2, (T, L, H)).astype(np.float32)
        return {
            "h": rng.uniform(-1, 1, (T, L, H)).astype(np.float32),
            "c": c,
            "tanh_c": np.tanh(c),  # as the LSTM's record gives it (the LN-LSTM's is tanh(LN(c)))
            "gates": gates.astype(np.float32),
            "logits": rng.normal(0, 3, (T, V)),
        }


def test_lstm_recording_is_split_into_named_gates_with_tanh_c_and_predictions():
    activations = record_activations(FakeModel("lstm"), np.array([1, 2, 3, 4, 5, 6]))
    assert quantities(activations) == ["h", "c", "tanh_c", "i", "f", "o", "g"]
    np.testing.assert_allclose(activations["tanh_c"], np.tanh(activations["c"]), rtol=1e-6)
    for k, gate in enumerate("ifog"):
        assert activations[gate].shape == (6, 2, 3)
        np.testing.assert_allclose(activations[gate][0], k / 10, rtol=1e-6)
    assert activations["top_ids"].shape == (6, 5) and activations["top_probs"].shape == (6, 5)
    np.testing.assert_array_equal(activations["char_ids"], [1, 2, 3, 4, 5, 6])


def test_gru_and_rnn_quantities():
    gru = record_activations(FakeModel("gru"), np.arange(4))
    assert quantities(gru) == ["h", "r", "z", "n"]
    np.testing.assert_allclose(gru["n"][:, :, :], gru["r"] + 0.2, rtol=1e-5)
    assert quantities(record_activations(FakeModel("rnn"), np.arange(4))) == ["h"]


def test_softmax_is_stable_for_huge_logits():
    probs = softmax(np.array([[1000.0, 999.0, -1000.0]]))
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs[0, :2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    ids, top = top_predictions(np.array([[1000.0, 1002.0, 999.0, 1001.0]]), k=5)  # k capped at V
    np.testing.assert_array_equal(ids, [[1, 3, 0, 2]])
    assert np.all(np.diff(top[0]) <= 0) and abs(top.sum() - 1) < 1e-12


def planted_activations(text):
    """h of layer 1 cell 2 equals the quote feature, layer 0 cell 1 its negative; one cell is constant."""
    rng = np.random.default_rng(0)
    quote = quote_feature(text)
    h = rng.uniform(-1, 1, (len(text), 2, 4)).astype(np.float32)
    h[:, 1, 2] = quote
    h[:, 0, 1] = -0.9 * quote + 0.05 * rng.normal(size=len(text))
    h[:, 0, 3] = 0.1  # constant: must not produce NaN
    return {"char_ids": np.zeros(len(text), dtype=np.int64), "h": h, "c": 2 * h, "tanh_c": np.tanh(2 * h)}


TEXT = 'He said "yes" and then "no, never" and left.\nShe asked "why?" twice.\n' * 3


def test_ranking_finds_the_planted_quote_cell_first():
    activations = planted_activations(TEXT)
    features = {"in_double_quote": quote_feature(TEXT), "constant": np.ones(len(TEXT))}
    rows = rank_cells(activations, features, quantity="h", top=3)
    assert len(rows) == 3 and all(row.feature == "in_double_quote" for row in rows)  # constant skipped
    assert rows[0] == RankedCell("in_double_quote", 1, 2, "h", pytest.approx(1.0))
    assert (rows[1].layer, rows[1].cell) == (0, 1) and rows[1].correlation < -0.95
    assert all(np.isfinite(row.correlation) for row in rows)


def test_ranking_over_several_quantities_and_constant_cells_score_zero():
    activations = planted_activations(TEXT)
    rows = rank_cells(activations, {"q": quote_feature(TEXT)}, quantity=["h", "tanh_c"], top=100)
    assert len(rows) == 2 * 2 * 4
    assert {row.quantity for row in rows[:2]} == {"h", "tanh_c"}
    constant = [row for row in rows if (row.layer, row.cell) == (0, 3)]
    assert [row.correlation for row in constant] == [0.0, 0.0]


def test_ranking_rejects_unknown_quantity_and_mismatched_feature():
    activations = planted_activations(TEXT)
    with pytest.raises(CharrnnError, match="no quantity 'f'"):
        rank_cells(activations, {"q": quote_feature(TEXT)}, quantity="f")
    with pytest.raises(ValueError, match="steps"):
        rank_cells(activations, {"q": np.ones(3)})


def test_select_cells_deduplicates_by_strength():
    activations = planted_activations(TEXT)
    rows = [RankedCell("a", 0, 1, "h", -0.5), RankedCell("b", 1, 2, "h", 0.9), RankedCell("c", 0, 1, "h", 0.7)]
    values, labels = select_cells(activations, rows, limit=5)
    assert values.shape == (2, len(TEXT)) and len(labels) == 2
    assert labels[0].startswith("L1 #2 h ~ b") and labels[1].startswith("L0 #1 h ~ c")
    np.testing.assert_array_equal(values[0], activations["h"][:, 1, 2])


def test_gate_saturation_fractions():
    i = np.zeros((4, 1, 2))
    i[:, 0, 0] = [0.05, 0.5, 0.95, 0.99]
    i[:, 0, 1] = [0.1, 0.9, 0.0, 0.3]  # the thresholds themselves are not saturated
    saturation = gate_saturation({"h": i, "i": i, "g": i - 1})
    assert isinstance(saturation, GateSaturation) and saturation.gates == ["i"]  # g is tanh, not a gate
    np.testing.assert_allclose(saturation.left["i"], [[0.25, 0.25]])
    np.testing.assert_allclose(saturation.right["i"], [[0.5, 0.0]])
    assert gate_saturation({"h": i}).gates == []


def test_activations_npz_round_trip_without_pickle(tmp_path):
    text = 'a "\U0001f600" <b>\n\udcff'
    activations = record_activations(FakeModel("gru"), np.arange(len(text)) % 7)
    path = tmp_path / "activations.npz"
    save_activations_npz(path, activations, text, list("abcdefg"), {"config": {"cell": "gru"}, "x": np.float32(1.5)})
    loaded, loaded_text, symbols, meta = load_activations_npz(path)
    assert loaded_text == text and symbols == list("abcdefg")
    assert meta == {"config": {"cell": "gru"}, "x": 1.5}
    assert set(loaded) == set(activations)
    np.testing.assert_array_equal(loaded["z"], activations["z"])
    with np.load(path, allow_pickle=False) as archive:
        assert archive["text_codepoints"].dtype == np.uint32


def test_unreadable_activations_file_is_a_user_error(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(CharrnnError, match="cannot read activations"):
        load_activations_npz(path)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(CharrnnError, match="not an .npz archive"):
        load_activations_npz(tmp_path / "plain.npy")


def test_write_output_errors_are_user_errors(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CharrnnError, match="cannot write .*a-file/out.bin.*disk is not full"):
        write_output(tmp_path / "a-file" / "out.bin", lambda stream: stream.write(b"x"))
    write_output(tmp_path / "new" / "out.bin", lambda stream: stream.write(b"x"))  # the directory is made
    assert (tmp_path / "new" / "out.bin").read_bytes() == b"x"


def test_ansi_view_plain_and_coloured():
    text = "ab\ncd\x1b"
    values = np.array([-1.0, 0.0, 0.5, 0.5, 1.0, 0.25])
    assert ansi_cell_view(text, values, color=False) == "ab\ncd\u241b"  # ESC cannot reach the terminal
    coloured = ansi_cell_view(text, values)
    assert ANSI.sub("", coloured) == "ab\ncd\u241b"
    assert coloured.count("\n") == 1 and "\x1b[0m\n" in coloured
    assert "\x1b[48;2;33;102;172m" in coloured  # -1 -> blue
    assert "\x1b[48;2;247;247;247m" in coloured  # 0 -> white
    assert "\x1b[48;2;178;24;43m" in coloured  # +1 -> red
    assert coloured.endswith("\x1b[0m")
    cube = ansi_cell_view("xy", np.array([-1.0, 1.0]), palette="256")
    assert "\x1b[48;5;" in cube and "48;2" not in cube
    centred = ansi_cell_view("xy", np.array([0.5, 1.0]), center=0.5, scale=0.5)
    assert "\x1b[48;2;247;247;247m" in centred and "\x1b[48;2;178;24;43m" in centred


def test_ranking_one_per_cell_keeps_each_cells_best_quantity():
    activations = planted_activations(TEXT)
    rows = rank_cells(activations, {"q": quote_feature(TEXT)}, quantity=["h", "tanh_c"], top=3, one_per_cell=True)
    assert len(rows) == 3
    assert len({(row.layer, row.cell) for row in rows}) == 3
    # h and tanh_c of the planted cell tie at r = 1: the first quantity listed wins.
    assert (rows[0].layer, rows[0].cell) == (1, 2) and rows[0].quantity == "h"
    everything = rank_cells(
        activations, {"q": quote_feature(TEXT)}, quantity=["h", "tanh_c"], top=100, one_per_cell=True
    )
    assert len(everything) == 2 * 4


def test_busiest_window_finds_where_the_features_change():
    text = "x" * 200 + 'a "b" (c) "d"' + "y" * 200
    features = [quote_feature(text), np.zeros(len(text))]
    start = busiest_window(features, 20)
    assert 193 <= start <= 202
    assert busiest_window(features, 1000) == 0  # the whole text fits
    # a feature that changes everywhere weighs no more than one that changes rarely
    alternating = np.arange(len(text)) % 2.0
    assert 193 <= busiest_window([quote_feature(text), alternating], 20) <= 202  # all four quote changes


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_cell_quantities_are_known_before_recording(cell):
    assert cell_quantities(cell) == quantities(record_activations(FakeModel(cell), np.arange(3)))


def test_a_layer_normalised_lstm_records_what_its_h_reads():
    """tanh_c of an LN-LSTM is tanh(LN(c)), and h = o * tanh_c, as the cell computes them."""
    from charrnn.model import Model, ModelConfig

    model = Model(ModelConfig("lnlstm", vocab_size=7, hidden=8, layers=2), seed=3)
    activations = record_activations(model, np.array([1, 2, 3, 4, 5, 6]))
    assert quantities(activations) == ["h", "c", "tanh_c", "i", "f", "o", "g"]
    c = activations["c"].astype(np.float64)
    normalised = (c - c.mean(axis=-1, keepdims=True)) / np.sqrt(c.var(axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(activations["tanh_c"], np.tanh(normalised), rtol=1e-5, atol=1e-6)  # gains 1, biases 0
    np.testing.assert_allclose(activations["h"], activations["o"] * activations["tanh_c"], rtol=1e-6, atol=1e-7)


def test_busiest_window_weights_features():
    text = "x" * 100 + '"a"' + "x" * 100 + "(b)" + "x" * 100
    features = [quote_feature(text), bracket_depth(text)]
    assert 83 <= busiest_window(features, 20, weights=[1.0, 0.1]) <= 100  # both changes of the quote
    assert 186 <= busiest_window(features, 20, weights=[0.1, 1.0]) <= 203
