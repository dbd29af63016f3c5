"""The units split's orchestration (charrnn/unit_split.py); its arithmetic is checked with every plan in
test_model.py (float64 agreement, finite differences, same bits on repeats)."""

import numpy as np
import pytest
from test_model import UNIT_CELLS, split_into, tiny_problem


@pytest.mark.parametrize("cell", UNIT_CELLS)
def test_a_failing_thread_does_not_leave_the_others_waiting(cell, monkeypatch):
    """A units-split thread that fails before its first meeting (as Ctrl-C between two kernels
    would) lets the others through; the error reaches the caller and the model still works."""
    import charrnn.model as model_module

    model, inputs, targets, state = tiny_problem(cell, True, B=4, H=6)
    split_into(monkeypatch, model, "units", 2)
    real = model_module.Model._cell_forward

    def failing(self, layer, ws, state, W_h, units):
        if units[2] == 1:
            raise KeyboardInterrupt
        return real(self, layer, ws, state, W_h, units)

    monkeypatch.setattr(model_module.Model, "_cell_forward", failing)
    with pytest.raises(KeyboardInterrupt):
        model.forward(inputs, targets, state)
    monkeypatch.setattr(model_module.Model, "_cell_forward", real)
    loss, _ = model.forward(inputs, targets, state)
    assert np.isfinite(loss)
