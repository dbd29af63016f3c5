"""The cell table (charrnn/cells.py): each entry is consistent with the kernels' legend and the model."""

import numpy as np
import pytest

from charrnn.cells import CELLS, cell_named
from charrnn.errors import CharrnnError
from charrnn.kernels import GATE_BLOCKS, GATE_NAMES
from charrnn.model import ModelConfig, init_params, parameter_shapes


def test_every_cell_of_the_legend_has_one_entry_with_its_own_code():
    assert set(CELLS) == set(GATE_NAMES) == set(GATE_BLOCKS)
    assert len({cell.code for cell in CELLS.values()}) == len(CELLS)
    for name, cell in CELLS.items():
        assert cell.name == name
        assert cell.gate_names == GATE_NAMES[name] and cell.gate_blocks == GATE_BLOCKS[name]


@pytest.mark.parametrize("name", list(CELLS))
def test_parameters_are_the_common_three_plus_the_cells_own(name):
    cell = CELLS[name]
    config = ModelConfig(name, vocab_size=7, hidden=5, layers=2)
    shapes = parameter_shapes(config)
    GH = cell.gate_blocks * 5
    for layer in range(2):
        assert shapes[f"layer{layer}.W_x"] == (7 if layer == 0 else 5, GH)
        assert shapes[f"layer{layer}.W_h"] == (5, GH) and shapes[f"layer{layer}.b"] == (GH,)
        for extra, width in cell.extra.items():
            assert shapes[f"layer{layer}.{extra}"] == ((5,) if width == "H" else (GH,))
    assert len(shapes) == 2 * (3 + len(cell.extra)) + 2


@pytest.mark.parametrize("name", list(CELLS))
def test_initialisation_follows_the_entry(name):
    cell = CELLS[name]
    params = init_params(ModelConfig(name, vocab_size=7, hidden=5, layers=2), seed=0)
    for layer in range(2):
        forget = params[f"layer{layer}.b"][5:10]
        assert np.all(forget == 1.0) if cell.has_memory else np.all(np.abs(forget) <= 0.08)
        for extra, value in cell.starts.items():
            assert np.all(params[f"layer{layer}.{extra}"] == value)


def test_the_layer_normalised_lstm_records_the_lstms_quantities():
    assert CELLS["lnlstm"].quantities == CELLS["lstm"].quantities == ("h", "c", "tanh_c", "i", "f", "o", "g")
    assert CELLS["rnn"].quantities == ("h",)  # its single block is h itself
    assert CELLS["gru"].quantities == ("h", "r", "z", "n")


def test_an_unknown_cell_is_one_clear_error():
    with pytest.raises(CharrnnError, match="unknown model type 'lsmt'; choose one of lstm, gru, rnn, lnlstm"):
        cell_named("lsmt")
