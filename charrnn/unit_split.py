"""The units split of a window (charrnn.plan): each thread owns a share of every layer's hidden units.

For each layer, one round of threads (charrnn.parallel.run_parts): every thread computes its units'
gate columns of the input projection, then runs the layer's time loop on them for all streams,
meeting the others at the spin barrier once per step (charrnn.kernels.recurrent). Backward runs the
layers top down the same way: each thread its units' gate gradients, its columns of dW_h, dW_x and b,
its rows of the output layer's gradients and its columns of the gradient sent to the layer below.
The output layer's forward is shared by rows. The model (charrnn.model) owns the arrays and the cell
dispatch; this module only cuts the work.
"""

from functools import partial

import numpy as np

from charrnn.kernels.layers import (
    add_bias,
    bias_backward,
    embedding_backward,
    embedding_forward,
    matmul,
    matmul_accumulate,
)
from charrnn.kernels.sync import give_up
from charrnn.parallel import run_parts


def grouped_weights(window, params, recurrent, for_backward):
    """Per layer: W_x and b with the gate axis grouped, each thread's columns of W_x (layers
    above 0, whose input is a product) and of W_h as contiguous copies, and, for a backward,
    each thread's rows of W_h transposed (views: the kernels pack them)."""
    layers = []
    for layer, W_h in enumerate(recurrent):
        W_x = params[f"layer{layer}.W_x"][:, window.perm]
        W_h = W_h[:, window.perm]
        G = len(window.perm) // W_h.shape[0]
        layers.append(
            {
                "W_x": W_x,
                "W_x_columns": [np.ascontiguousarray(W_x[:, G * f : G * (f + n)]) for f, n in window.units]
                if layer
                else None,
                "b": params[f"layer{layer}.b"][window.perm],
                "W_h_columns": [np.ascontiguousarray(W_h[:, G * f : G * (f + n)]) for f, n in window.units],
                "W_h_T_rows": [W_h[f : f + n].T for f, n in window.units] if for_backward else None,
            }
        )
    return layers


def _layer_round(task, model, window, layer, *args):
    """Runs task(model, window, layer, worker, *args) on every thread of the split at once, from a
    fresh barrier. A thread that fails (an error, or Ctrl-C between two kernels) first lets the others
    through their remaining meetings, so its error reaches the caller instead of a hang."""
    window.arrivals[:] = 0

    def share(worker):
        try:
            task(model, window, layer, worker, *args)
        except BaseException:
            give_up(window.arrivals, worker)
            raise

    run_parts([partial(share, worker) for worker in range(len(window.units))])


def forward_units(model, window, inputs, targets, state, use_dropout, want_grad, scale, recurrent):
    """Forward with every layer's units shared between threads; returns the loss sums of the
    output rows each thread scored."""
    cfg, ws = model.config, window.parts[0]
    B, T = inputs.shape
    window.weights = grouped_weights(window, model.params, recurrent, want_grad)
    layer_input = None
    for layer in range(cfg.layers):
        _layer_round(_layer_forward, model, window, layer, inputs, state, layer_input)
        layer_input = model._layer_output(ws, layer, use_dropout)
    if targets is not None:
        ws.targets.reshape(T, B)[...] = targets.T
    return run_parts(
        [
            partial(model._output_rows, ws, rows, layer_input, targets is not None, want_grad, scale)
            for rows in window.output_rows
        ]
    )


def _layer_forward(model, window, layer, worker, inputs, state, layer_input):
    ws, weights = window.parts[0], window.weights[layer]
    first, count = window.units[worker]
    G = model.cell.gate_blocks
    block = slice(G * first, G * (first + count))
    gates = ws.gates[layer]
    T, B, GH = gates.shape
    if layer == 0:
        embedding_forward(gates[:, :, block], weights["W_x"][:, block], weights["b"][block], inputs)
    else:
        rows = gates.reshape(T * B, GH)[:, block]
        matmul(rows, layer_input.reshape(T * B, -1), weights["W_x_columns"][worker])
        add_bias(rows, weights["b"][block])
    units = (first, count, worker, len(window.units), window.arrivals)
    model._cell_forward(layer, ws, state, weights["W_h_columns"][worker], units)


def backward_units(model, window, grads, inputs, state, dstate, dfinal_state, use_dropout):
    """Backward with the units split: a layer per round of threads, top down, each thread on its
    own units (and the gate columns, weight columns and output rows that belong to them); the
    grouped gradients are put back in the natural gate order at the end."""
    cfg, ws = model.config, window.parts[0]
    for grouped in window.grads:
        for grad in grouped.values():
            grad.fill(0.0)
    for layer in range(cfg.layers - 1, -1, -1):
        if dfinal_state is None:
            dh_last = dc_last = ws.zero_state
        else:
            dh_last = np.ascontiguousarray(dfinal_state[0, layer], dtype=model.dtype)
            dc_last = np.ascontiguousarray(dfinal_state[1, layer], dtype=model.dtype)
        _layer_round(
            _layer_backward,
            model,
            window,
            layer,
            grads,
            inputs,
            state,
            dstate[0, layer],
            dstate[1, layer],
            dh_last,
            dc_last,
            use_dropout,
        )
    for layer in range(cfg.layers):
        for key, grad in window.grads[layer].items():
            if key == "b":
                grads[f"layer{layer}.b"][window.perm] += grad
            else:
                grads[f"layer{layer}.{key}"][:, window.perm] += grad


def _layer_backward(model, window, layer, worker, grads, inputs, state, dh0, dc0, dh_last, dc_last, use_dropout):
    cfg, p, ws, weights = model.config, model.params, window.parts[0], window.weights[layer]
    B, T = inputs.shape
    H, GH, G = cfg.hidden, cfg.gate_width, model.cell.gate_blocks
    first, count = window.units[worker]
    own, block = slice(first, first + count), slice(G * first, G * (first + count))
    dh_rows = ws.dh_seq.reshape(T * B, H)
    if layer == cfg.layers - 1:  # the output layer's gradients for these units
        top = ws.dropped[layer] if use_dropout else ws.h_seq[layer]
        matmul_accumulate(grads["out.W"][own], top.reshape(T * B, H)[:, own].T, ws.dlogits)
        if worker == 0:
            bias_backward(grads["out.b"], ws.dlogits)
        matmul(dh_rows[:, own], ws.dlogits, p["out.W"][own].T)
    if use_dropout:
        ws.dh_seq[:, :, own] *= ws.masks[layer][:, :, own]
    units = (first, count, worker, len(window.units), window.arrivals)
    model._cell_backward(layer, ws, state, dh0, dc0, dh_last, dc_last, weights["W_h_T_rows"][worker], units, grads)

    dgates_x = ws.dgates_x.reshape(T * B, GH)
    dgates_h = ws.dgates_h.reshape(T * B, GH)
    grouped = window.grads[layer]
    dW_h = grouped["W_h"][:, block]
    matmul_accumulate(dW_h, state[0, layer].T, ws.dgates_h[0][:, block])
    if T > 1:
        matmul_accumulate(dW_h, ws.h_seq[layer][: T - 1].reshape((T - 1) * B, H).T, dgates_h[B:, block])
    bias_backward(grouped["b"][block], dgates_x[:, block])
    if layer == 0:
        embedding_backward(grouped["W_x"][:, block], ws.dgates_x[:, :, block], inputs)
    else:
        below = ws.dropped[layer - 1] if use_dropout else ws.h_seq[layer - 1]
        matmul_accumulate(grouped["W_x"][:, block], below.reshape(T * B, H).T, dgates_x[:, block])
        # Every thread has passed the loop's last meeting, so every gate gradient is in place.
        matmul(dh_rows[:, own], dgates_x, weights["W_x"][own].T)
