"""The cell table: one description per cell type, read by the model, sampler, inspector and CLI.

A `Cell` says what the rest of charrnn needs to know about a cell type: its gate blocks (the order
is charrnn.kernels' legend), whether it carries a cell state c, the parameters it has beyond the
W_x, W_h and b every layer has, how they start, whether its input projection takes b before the
cell (so the model adds it) or inside it, whether it can run the units split, which work arrays
its time loop keeps for backward, and the code the compiled sampling loop dispatches on. Its
`forward` and `backward` run one layer's time loop on a window's work arrays (charrnn.model's
_Workspace) by calling the cell's own kernels, which keep the math explicit:
charrnn.kernels.recurrent (LSTM, GRU, RNN) and charrnn.kernels.lnlstm.

forward(ws, layer, params, state, W_h, tile, units) runs after the model has put the layer's input
projection into ws.gates[layer]; units = (first, count, worker, workers, arrivals) as in
charrnn.kernels.recurrent. backward(ws, layer, params, grads, state, dh0, dc0, dh_last, dc_last,
W_h_T, tile, units) leaves in ws.dgates_x what flows to W_x and the layer below (and to b when
`input_bias`), in ws.dgates_h what flows to W_h, and adds the gradients of the cell's own
parameters (`extra`) to grads.

Adding a cell type: its kernels, one entry here, its name in charrnn.kernels' legend, and the
compiled sampling loop's dispatch on its code (charrnn.kernels.sampling.advance).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.kernels import GATE_NAMES, GRU, LNLSTM, LSTM, RNN
from charrnn.kernels.layers import bias_backward
from charrnn.kernels.lnlstm import (
    layer_norm_backward,
    layer_norm_forward,
    layer_norm_param_backward,
    lnlstm_backward,
    lnlstm_forward,
)
from charrnn.kernels.recurrent import gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward, rnn_forward
from charrnn.kernels.sampling import GRU_CODE, LNLSTM_CODE, LSTM_CODE, RNN_CODE

FORGET_BIAS = 1.0  # char-rnn starts LSTMs remembering


@dataclass(frozen=True)
class Cell:
    name: str
    code: int  # what the compiled sampling loop dispatches on
    summary: str  # one line for --help and the README
    forward: Callable
    backward: Callable
    has_memory: bool = False  # carries c beside h (state[1]); else state[1] stays zero
    # name -> "H" or "GH": each layer's parameters besides W_x, W_h, b, e.g. layer0.b_hn (H,)
    extra: dict = field(default_factory=dict)
    starts: dict = field(default_factory=dict)  # extra parameters that start at a constant instead of the usual draw
    input_bias: bool = True  # b joins the input projection before the cell (else the cell adds it)
    splits_units: bool = True  # can share a layer's units between threads (charrnn.plan's units split)
    separate_dgates_h: bool = False  # what reaches W_h differs from what reaches W_x and b
    work: Callable | None = None  # (L, T, B, H, GH, dtype) -> namespace of the cell's own work arrays

    @property
    def gate_names(self):
        return GATE_NAMES[self.name]

    @property
    def gate_blocks(self):
        return len(GATE_NAMES[self.name])

    @property
    def quantities(self):
        """What inspection records for this cell, besides the logits: h, the memory, the gates."""
        memory = ("c", "tanh_c") if self.has_memory else ()
        gates = self.gate_names if self.gate_blocks > 1 else ()  # the RNN's single block is h itself
        return ("h", *memory, *gates)

    def parameter_shapes(self, layer, input_width, H):
        GH = self.gate_blocks * H
        shapes = {"W_x": (input_width, GH), "W_h": (H, GH), "b": (GH,)}
        shapes.update({name: ((H,) if width == "H" else (GH,)) for name, width in self.extra.items()})
        return {f"layer{layer}.{name}": shape for name, shape in shapes.items()}

    def initialise(self, params, layer, H):
        """Cell-specific starting values, after every parameter was drawn uniformly."""
        if self.has_memory:  # the forget gate's block
            params[f"layer{layer}.b"][H : 2 * H] = FORGET_BIAS
        for name, value in self.starts.items():
            params[f"layer{layer}.{name}"][:] = value


# ------------------------------------------------------------------------------------------ LSTM
def _lstm_forward(ws, layer, params, state, W_h, tile, units):
    h0, c0 = state[0, layer], state[1, layer]
    lstm_forward(ws.h_seq[layer], ws.c_seq[layer], ws.aux_seq[layer], ws.gates[layer], W_h, h0, c0, tile, *units)


def _lstm_backward(ws, layer, params, grads, state, dh0, dc0, dh_last, dc_last, W_h_T, tile, units):
    lstm_backward(
        ws.dgates_x,
        dh0,
        dc0,
        ws.dh_seq,
        dh_last,
        dc_last,
        ws.gates[layer],
        ws.c_seq[layer],
        ws.aux_seq[layer],
        state[1, layer],
        W_h_T,
        tile,
        *units,
    )


# ------------------------------------------------------------------------------------------- GRU
def _gru_forward(ws, layer, params, state, W_h, tile, units):
    b_hn = params[f"layer{layer}.b_hn"]
    gru_forward(ws.h_seq[layer], ws.aux_seq[layer], ws.gates[layer], W_h, b_hn, state[0, layer], tile, *units)


def _gru_backward(ws, layer, params, grads, state, dh0, dc0, dh_last, dc_last, W_h_T, tile, units):
    gates = ws.gates[layer]
    gru_backward(
        ws.dgates_x,
        ws.dgates_h,
        dh0,
        ws.dh_seq,
        dh_last,
        gates,
        ws.h_seq[layer],
        ws.aux_seq[layer],
        state[0, layer],
        W_h_T,
        tile,
        *units,
    )
    # b_hn sits inside the reset gate's product, so it collects what reaches h W_hn: the n block of
    # these units' columns (grouped by thread in the units split: r, z, n, each `count` wide).
    first, count = units[0], units[1]
    T, B, GH = gates.shape
    n_block = slice(3 * first + 2 * count, 3 * first + 3 * count)
    bias_backward(grads[f"layer{layer}.b_hn"][first : first + count], ws.dgates_h.reshape(T * B, GH)[:, n_block])


# ------------------------------------------------------------------------------------------- RNN
def _rnn_forward(ws, layer, params, state, W_h, tile, units):
    rnn_forward(ws.h_seq[layer], ws.gates[layer], W_h, state[0, layer], tile, *units)


def _rnn_backward(ws, layer, params, grads, state, dh0, dc0, dh_last, dc_last, W_h_T, tile, units):
    rnn_backward(ws.dgates_x, dh0, ws.dh_seq, dh_last, ws.gates[layer], W_h_T, tile, *units)


# --------------------------------------------------------------------------------------- LN-LSTM
def _lnlstm_work(L, T, B, H, GH, dtype):
    return SimpleNamespace(
        x_hat=np.empty((L, T, B, GH), dtype),
        r_hat=np.empty((L, T, B, GH), dtype),
        c_hat=np.empty((L, T, B, H), dtype),
        rstd=np.empty((L, T, B, 3), dtype),  # per row: input, recurrent, cell state
        dm=np.empty((T, B, H), dtype),  # backward: d LN(c_t), what gain_c and bias_c collect
    )


def input_shift(params, layer):
    """What the LN-LSTM adds to its normalised input projection: its bias and b, which do the same."""
    return params[f"layer{layer}.bias_x"] + params[f"layer{layer}.b"]


def _lnlstm_forward(ws, layer, params, state, W_h, tile, units):
    p, work = params, ws.cell_work
    gates = ws.gates[layer]
    T, B, GH = gates.shape
    rows = gates.reshape(T * B, GH)
    x_rstd = work.rstd[layer].reshape(T * B, 3)[:, 0]
    layer_norm_forward(
        rows, work.x_hat[layer].reshape(T * B, GH), x_rstd, rows, p[f"layer{layer}.gain_x"], input_shift(p, layer)
    )
    lnlstm_forward(
        ws.h_seq[layer],
        ws.c_seq[layer],
        ws.aux_seq[layer],
        gates,
        work.r_hat[layer],
        work.c_hat[layer],
        work.rstd[layer],
        W_h,
        p[f"layer{layer}.gain_h"],
        p[f"layer{layer}.bias_h"],
        p[f"layer{layer}.gain_c"],
        p[f"layer{layer}.bias_c"],
        state[0, layer],
        state[1, layer],
        tile,
    )


def _lnlstm_backward(ws, layer, params, grads, state, dh0, dc0, dh_last, dc_last, W_h_T, tile, units):
    p, work = params, ws.cell_work
    gates = ws.gates[layer]
    T, B, GH = gates.shape
    H = GH // 4
    lnlstm_backward(
        ws.dgates_x,
        ws.dgates_h,
        work.dm,
        dh0,
        dc0,
        ws.dh_seq,
        dh_last,
        dc_last,
        gates,
        ws.c_seq[layer],
        ws.aux_seq[layer],
        work.r_hat[layer],
        work.c_hat[layer],
        work.rstd[layer],
        p[f"layer{layer}.gain_h"],
        p[f"layer{layer}.gain_c"],
        state[1, layer],
        W_h_T,
        tile,
    )
    g = f"layer{layer}."
    da = ws.dgates_x.reshape(T * B, GH)
    layer_norm_param_backward(grads[g + "gain_h"], grads[g + "bias_h"], da, work.r_hat[layer].reshape(T * B, GH))
    layer_norm_param_backward(
        grads[g + "gain_c"], grads[g + "bias_c"], work.dm.reshape(T * B, H), work.c_hat[layer].reshape(T * B, H)
    )
    x_hat = work.x_hat[layer].reshape(T * B, GH)
    layer_norm_param_backward(grads[g + "gain_x"], grads[g + "bias_x"], da, x_hat)
    bias_backward(grads[g + "b"], da)
    # From here on dgates_x holds what reaches the projection x W_x itself: through the input's LN.
    layer_norm_backward(da, da, x_hat, work.rstd[layer].reshape(T * B, 3)[:, 0], p[g + "gain_x"])


# ---------------------------------------------------------------------------------------- table
CELLS = {
    LSTM: Cell(
        LSTM,
        code=LSTM_CODE,
        summary="long short-term memory (char-rnn's default)",
        forward=_lstm_forward,
        backward=_lstm_backward,
        has_memory=True,
    ),
    GRU: Cell(
        GRU,
        code=GRU_CODE,
        summary="gated recurrent unit, PyTorch's form",
        forward=_gru_forward,
        backward=_gru_backward,
        extra={"b_hn": "H"},
        separate_dgates_h=True,
    ),
    RNN: Cell(RNN, code=RNN_CODE, summary="tanh RNN", forward=_rnn_forward, backward=_rnn_backward),
    LNLSTM: Cell(
        LNLSTM,
        code=LNLSTM_CODE,
        summary="layer-normalised LSTM (Ba, Kiros and Hinton 2016)",
        forward=_lnlstm_forward,
        backward=_lnlstm_backward,
        has_memory=True,
        extra={"gain_x": "GH", "bias_x": "GH", "gain_h": "GH", "bias_h": "GH", "gain_c": "H", "bias_c": "H"},
        starts={"gain_x": 1.0, "bias_x": 0.0, "gain_h": 1.0, "bias_h": 0.0, "gain_c": 1.0, "bias_c": 0.0},
        input_bias=False,
        # Layer normalisation needs every unit of a row at once.
        splits_units=False,
        separate_dgates_h=True,
        work=_lnlstm_work,
    ),
}


def cell_named(name):
    if name not in CELLS:
        raise CharrnnError(f"unknown model type {name!r}; choose one of {', '.join(CELLS)}")
    return CELLS[name]
