"""A plain NumPy forward pass, written independently of the kernels, and gradient-check helpers."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(v, gain, bias, eps=1e-5):
    centred = v - v.mean(axis=-1, keepdims=True)
    return gain * centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps) + bias


def reference_forward(config, params, inputs, targets, state, masks=None):
    """Mean cross-entropy and final state of a window, step by step, batch-major like the inputs.

    masks: optional (L, T, B, H) dropout multipliers applied to each layer's output.
    """
    B, T = inputs.shape
    L, V = config.layers, config.vocab_size
    h = [state[0, layer].copy() for layer in range(L)]
    c = [state[1, layer].copy() for layer in range(L)]
    total = 0.0
    for t in range(T):
        x = np.eye(V)[inputs[:, t]]
        for layer in range(L):
            W_x, W_h, b = (params[f"layer{layer}.{n}"] for n in ("W_x", "W_h", "b"))
            pre_x = x @ W_x + b
            pre_h = h[layer] @ W_h
            if config.cell == "lstm":
                i, f, o, g = np.split(pre_x + pre_h, 4, axis=1)
                c[layer] = sigmoid(f) * c[layer] + sigmoid(i) * np.tanh(g)
                h[layer] = sigmoid(o) * np.tanh(c[layer])
            elif config.cell == "lnlstm":
                ln = {
                    n: params[f"layer{layer}.{n}"] for n in ("gain_x", "bias_x", "gain_h", "bias_h", "gain_c", "bias_c")
                }
                a = layer_norm(x @ W_x, ln["gain_x"], ln["bias_x"]) + layer_norm(pre_h, ln["gain_h"], ln["bias_h"]) + b
                i, f, o, g = np.split(a, 4, axis=1)
                c[layer] = sigmoid(f) * c[layer] + sigmoid(i) * np.tanh(g)
                h[layer] = sigmoid(o) * np.tanh(layer_norm(c[layer], ln["gain_c"], ln["bias_c"]))
            elif config.cell == "gru":
                xr, xz, xn = np.split(pre_x, 3, axis=1)
                hr, hz, hn = np.split(pre_h, 3, axis=1)
                r, z = sigmoid(xr + hr), sigmoid(xz + hz)
                n = np.tanh(xn + r * (hn + params[f"layer{layer}.b_hn"]))
                h[layer] = (1 - z) * n + z * h[layer]
            else:
                h[layer] = np.tanh(pre_x + pre_h)
            x = h[layer] if masks is None else h[layer] * masks[layer, t]
        logits = x @ params["out.W"] + params["out.b"]
        logits = logits - logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total -= log_probs[np.arange(B), targets[:, t]].sum()
    final = np.stack([np.stack(h), np.stack(c)])
    if config.cell not in ("lstm", "lnlstm"):
        final[1] = 0.0
    return total / (B * T), final


def numerical_gradient(objective, array, index, step=1e-4):
    """Fourth-order central difference of objective() with respect to array[index].

    The five-point stencil's truncation error is O(step^4), so a step this large keeps both that and
    the rounding noise (~1e-16 / step) near 1e-12, well below the 1e-6 relative tolerance.
    """
    saved = array[index]
    values = {}
    for k in (-2, -1, 1, 2):
        array[index] = saved + k * step
        values[k] = objective()
    array[index] = saved
    return (8 * (values[1] - values[-1]) - (values[2] - values[-2])) / (12 * step)


def relative_error(analytic, numeric, floor=1e-9):
    """|a - n| / max(|a|, |n|, floor): the floor keeps gradients that are zero up to the central
    difference's own rounding noise (about 1e-10 absolute for losses near 1) from counting as errors."""
    scale = max(abs(analytic), abs(numeric), floor)
    return abs(analytic - numeric) / scale
