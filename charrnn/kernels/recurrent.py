"""Recurrent cells over a window of T steps: forward keeps what backward needs, backward runs BPTT.

Each layer's input projection (x_t W_x + b) is computed for all T*B rows before the time loop (one
large matrix product, or a row gather for layer 0); only h_{t-1} W_h is sequential, so only that
product sits inside these loops. Forward kernels overwrite `gates` (pre-activations of the input
projection, bias included) with the gate activations, which is all backward needs besides h and c.

Backward kernels write d(pre-activation) per step into `dgates_x` (what flows to W_x, b and the
layer below) and `dgates_h` (what flows to W_h); they differ only for the GRU's candidate block,
where the reset gate multiplies h W_hn. For LSTM and RNN the caller passes the same array twice.
`dh_seq` holds the loss gradient reaching each step's output h_t from above; `dh_last` and
`dc_last` are gradients reaching the final state (zero unless a caller differentiates through it);
`dh0`, `dc0` receive the gradients of the initial state. Backward kernels take the rows of W_h for
their units, transposed (W_h_T, (GH, count)): a view of W_h is enough, since the kernel packs it.

Every sequence kernel runs units first .. first+count of a layer (all H with one thread): their gate
block of the (thread-grouped, charrnn.plan) gate axis, their columns of W_h. With workers > 1 the
threads run at once and meet at a spin barrier once per step (charrnn.kernels.sync).

Each kernel packs its W_h (or W_h_T) into panels once per call and runs every step's product on them
(charrnn.kernels.panels): 1.3-1.9x faster than a BLAS call per step, which repacks W_h every time, and
each row's result is the same however the batch is cut. A window shorter than PANEL_MIN_STEPS (one
sampling step) calls the BLAS instead, through gemm_tiled with the caller's `tile_mnk`.

Speed: the element-wise loops run over one gate block of one row at a time, indexed from 0, so
LLVM sees unit-stride, non-negative indices and vectorizes them (an index like `H + j` could be
negative as far as it knows, and the wrap-around select defeats vectorization). Constants are
built in the array's dtype so float32 arithmetic is not promoted to float64.
"""

import math

import numpy as np

from charrnn.jit import njit
from charrnn.kernels.panels import packed_weights, product_space, step_product
from charrnn.kernels.sync import arrive_and_wait

# tanh(y) ~ y P(y^2) / Q(y^2) on |y| <= TANH_LIMIT, beyond which tanh rounds to +-1 in float32.
# Coefficients fitted with numpy (Lawson-weighted linearised least squares on the relative error,
# 40k points on [0, 9]): max relative error 2.1e-8 in exact arithmetic. Both polynomials have only
# positive coefficients, so Horner's rule cannot cancel. Evaluated in float64 and rounded once, the
# float32 result is within 0.85 ulp of tanh (and sigmoid within 6e-8): a float32 Horner evaluation
# would be twice as fast but up to 6 ulp off near +-1.
TANH_LIMIT = 9.0
P0, P1, P2 = 0.9999999795195097, 0.1338105209874484, 0.0034956191808689857
P3, P4 = 2.0609578576836067e-05, 1.3355322542680946e-08
Q0, Q1, Q2 = 1.0, 0.46714367714194066, 0.02587710129914512
Q3, Q4 = 0.0003285684962633305, 7.776834397353515e-07


@njit
def rational_tanh(y):
    """float64 tanh from the rational fit above. Comparisons, not min/max, so NaN stays NaN."""
    if y > TANH_LIMIT:
        y = TANH_LIMIT
    if y < -TANH_LIMIT:
        y = -TANH_LIMIT
    u = y * y
    return y * ((((P4 * u + P3) * u + P2) * u + P1) * u + P0) / ((((Q4 * u + Q3) * u + Q2) * u + Q1) * u + Q0)


@njit
def sigmoid(x):
    """float32: the rational fit, which LLVM vectorizes (libm's exp blocks that); float64: exact."""
    if isinstance(x, np.float32):
        return np.float32(0.5 + 0.5 * rational_tanh(0.5 * np.float64(x)))
    return 1.0 / (1.0 + math.exp(-x))


@njit
def tanh(x):
    """float32: the rational fit; float64: libm's tanh, so float64 gradient checks see exact math."""
    if isinstance(x, np.float32):
        return np.float32(rational_tanh(np.float64(x)))
    return math.tanh(x)


@njit
def copy_into(dst, src):
    """dst[...] = src for 2-D arrays, as a loop: slice assignment drags in Numba's shape-error
    formatting, which costs seconds of compile time per kernel."""
    rows, cols = src.shape
    for r in range(rows):
        for k in range(cols):
            dst[r, k] = src[r, k]


# ------------------------------------------------------------------------------------------ LSTM
@njit
def lstm_cell(a, r, c_prev, c_out, tanh_c_out, h_out):
    """One row: a (GH,) pre-activations in, activations out; r (GH,) = h_{t-1} W_h for this row."""
    H = c_prev.shape[0]
    sig_a, sig_r = a[: 3 * H], r[: 3 * H]
    for k in range(3 * H):
        sig_a[k] = sigmoid(sig_a[k] + sig_r[k])
    g, r_g = a[3 * H :], r[3 * H :]
    for j in range(H):
        g[j] = tanh(g[j] + r_g[j])
    i, f, o = a[:H], a[H : 2 * H], a[2 * H : 3 * H]
    for j in range(H):
        c_out[j] = f[j] * c_prev[j] + i[j] * g[j]
    for j in range(H):
        tanh_c_out[j] = tanh(c_out[j])
    for j in range(H):
        h_out[j] = o[j] * tanh_c_out[j]


@njit
def lstm_forward(h_seq, c_seq, tanh_c_seq, gates, W_h, h0, c0, tile_mnk, first, count, worker, workers, arrivals):
    """Forward over T steps of units first .. first+count: gates[:, :, G*first : G*(first+count)] is
    their block, W_h (H, G*count) their columns. workers > 1 run at once and meet after each step."""
    T, B, GH = gates.shape
    last = first + count
    block = slice(4 * first, 4 * last)
    panels = packed_weights(W_h, T)
    recurrent = product_space(B, W_h, panels)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        c_prev = c0 if t == 0 else c_seq[t - 1]
        step_product(recurrent, h_prev, W_h, panels, False, tile_mnk)
        for b in range(B):
            lstm_cell(
                gates[t, b, block],
                recurrent[b, : 4 * count],
                c_prev[b, first:last],
                c_seq[t, b, first:last],
                tanh_c_seq[t, b, first:last],
                h_seq[t, b, first:last],
            )
        if workers > 1:
            arrive_and_wait(arrivals, worker, workers, t + 1)


@njit
def lstm_cell_backward(d, dc_next, dh_above, dh_next, a, c_prev, tanh_c):
    """One row: d (GH,) receives d(pre-activation); dc_next (H,) goes from dc_t to dc_{t-1}."""
    H = c_prev.shape[0]
    one = d.dtype.type(1)
    i, f, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
    di, df, do, dg = d[:H], d[H : 2 * H], d[2 * H : 3 * H], d[3 * H :]
    for j in range(H):
        dh = dh_above[j] + dh_next[j]
        do[j] = dh * tanh_c[j] * o[j] * (one - o[j])
        dc_next[j] += dh * o[j] * (one - tanh_c[j] * tanh_c[j])
    for j in range(H):
        dc = dc_next[j]
        di[j] = dc * g[j] * i[j] * (one - i[j])
        df[j] = dc * c_prev[j] * f[j] * (one - f[j])
        dg[j] = dc * i[j] * (one - g[j] * g[j])
        dc_next[j] = dc * f[j]


@njit
def lstm_backward(
    dgates,
    dh0,
    dc0,
    dh_seq,
    dh_last,
    dc_last,
    gates,
    c_seq,
    tanh_c_seq,
    c0,
    W_h_T,
    tile_mnk,
    first,
    count,
    worker,
    workers,
    arrivals,
):
    """BPTT for units first .. first+count (W_h_T (G*H, count): their rows of W_h, transposed). Every
    step's dh_{t-1} needs every unit's d(pre-activation), so workers meet before that product."""
    T, B, GH = gates.shape
    last = first + count
    block = slice(4 * first, 4 * last)
    dh_next, dc_next = dh0, dc0  # the running gradients end as the initial state's
    copy_into(dh_next[:, first:last], dh_last[:, first:last])
    copy_into(dc_next[:, first:last], dc_last[:, first:last])
    panels = packed_weights(W_h_T, T)
    product = product_space(B, W_h_T, panels)
    for t in range(T - 1, -1, -1):
        c_prev = c0 if t == 0 else c_seq[t - 1]
        for b in range(B):
            lstm_cell_backward(
                dgates[t, b, block],
                dc_next[b, first:last],
                dh_seq[t, b, first:last],
                dh_next[b, first:last],
                gates[t, b, block],
                c_prev[b, first:last],
                tanh_c_seq[t, b, first:last],
            )
        if workers > 1:
            arrive_and_wait(arrivals, worker, workers, T - t)
        step_product(product, dgates[t], W_h_T, panels, False, tile_mnk)
        copy_into(dh_next[:, first:last], product[:, :count])


# ------------------------------------------------------------------------------------------- GRU
@njit
def gru_cell(a, r, b_hn, h_prev, hn_out, h_out):
    H = h_prev.shape[0]
    one = a.dtype.type(1)
    rz_a, rz_r = a[: 2 * H], r[: 2 * H]
    for k in range(2 * H):
        rz_a[k] = sigmoid(rz_a[k] + rz_r[k])
    reset, update, n, r_n = a[:H], a[H : 2 * H], a[2 * H :], r[2 * H :]
    for j in range(H):
        hn_out[j] = r_n[j] + b_hn[j]
    for j in range(H):
        n[j] = tanh(n[j] + reset[j] * hn_out[j])
    for j in range(H):
        h_out[j] = (one - update[j]) * n[j] + update[j] * h_prev[j]


@njit
def gru_forward(h_seq, hn_seq, gates, W_h, b_hn, h0, tile_mnk, first, count, worker, workers, arrivals):
    """As lstm_forward, for the GRU (b_hn (H,) whole; each worker reads its units' part)."""
    T, B, GH = gates.shape
    last = first + count
    block = slice(3 * first, 3 * last)
    panels = packed_weights(W_h, T)
    recurrent = product_space(B, W_h, panels)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        step_product(recurrent, h_prev, W_h, panels, False, tile_mnk)
        for b in range(B):
            gru_cell(
                gates[t, b, block],
                recurrent[b, : 3 * count],
                b_hn[first:last],
                h_prev[b, first:last],
                hn_seq[t, b, first:last],
                h_seq[t, b, first:last],
            )
        if workers > 1:
            arrive_and_wait(arrivals, worker, workers, t + 1)


@njit
def gru_cell_backward(dx, dr_h, dh_next, dh_above, a, h_prev, hn):
    """One row: dx, dr_h (GH,) receive the gradients; dh_next (H,) becomes dh_{t-1}'s direct part."""
    H = h_prev.shape[0]
    one = dx.dtype.type(1)
    reset, update, n = a[:H], a[H : 2 * H], a[2 * H :]
    dx_r, dx_z, dx_n = dx[:H], dx[H : 2 * H], dx[2 * H :]
    dh_r, dh_z, dh_n = dr_h[:H], dr_h[H : 2 * H], dr_h[2 * H :]
    for j in range(H):
        dh = dh_above[j] + dh_next[j]
        dn_pre = dh * (one - update[j]) * (one - n[j] * n[j])
        dr_pre = dn_pre * hn[j] * reset[j] * (one - reset[j])
        dz_pre = dh * (h_prev[j] - n[j]) * update[j] * (one - update[j])
        dx_r[j] = dr_pre
        dx_z[j] = dz_pre
        dx_n[j] = dn_pre
        dh_r[j] = dr_pre
        dh_z[j] = dz_pre
        dh_n[j] = dn_pre * reset[j]
        dh_next[j] = dh * update[j]


@njit
def gru_backward(
    dgates_x,
    dgates_h,
    dh0,
    dh_seq,
    dh_last,
    gates,
    h_seq,
    hn_seq,
    h0,
    W_h_T,
    tile_mnk,
    first,
    count,
    worker,
    workers,
    arrivals,
):
    T, B, GH = gates.shape
    last = first + count
    block = slice(3 * first, 3 * last)
    dh_next = dh0
    copy_into(dh_next[:, first:last], dh_last[:, first:last])
    panels = packed_weights(W_h_T, T)
    product = product_space(B, W_h_T, panels)
    for t in range(T - 1, -1, -1):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        for b in range(B):
            gru_cell_backward(
                dgates_x[t, b, block],
                dgates_h[t, b, block],
                dh_next[b, first:last],
                dh_seq[t, b, first:last],
                gates[t, b, block],
                h_prev[b, first:last],
                hn_seq[t, b, first:last],
            )
        if workers > 1:
            arrive_and_wait(arrivals, worker, workers, T - t)
        copy_into(product[:, :count], dh_next[:, first:last])  # the direct part, dh * z
        step_product(product, dgates_h[t], W_h_T, panels, True, tile_mnk)
        copy_into(dh_next[:, first:last], product[:, :count])


# ------------------------------------------------------------------------------------------- RNN
@njit
def rnn_cell(a, r, h_out):
    """One row: a (H,) pre-activations in, activations out (h' = tanh(a + r), kept in a for backward)."""
    for j in range(h_out.shape[0]):
        a[j] = tanh(a[j] + r[j])
    for j in range(h_out.shape[0]):
        h_out[j] = a[j]


@njit
def rnn_forward(h_seq, gates, W_h, h0, tile_mnk, first, count, worker, workers, arrivals):
    T, B, GH = gates.shape
    last = first + count
    panels = packed_weights(W_h, T)
    recurrent = product_space(B, W_h, panels)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        step_product(recurrent, h_prev, W_h, panels, False, tile_mnk)
        for b in range(B):
            rnn_cell(gates[t, b, first:last], recurrent[b, :count], h_seq[t, b, first:last])
        if workers > 1:
            arrive_and_wait(arrivals, worker, workers, t + 1)


@njit
def rnn_cell_backward(d, dh_above, dh_next, a):
    one = d.dtype.type(1)
    for j in range(d.shape[0]):
        d[j] = (dh_above[j] + dh_next[j]) * (one - a[j] * a[j])


@njit
def rnn_backward(dgates, dh0, dh_seq, dh_last, gates, W_h_T, tile_mnk, first, count, worker, workers, arrivals):
    T, B, GH = gates.shape
    last = first + count
    dh_next = dh0
    copy_into(dh_next[:, first:last], dh_last[:, first:last])
    panels = packed_weights(W_h_T, T)
    product = product_space(B, W_h_T, panels)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            rnn_cell_backward(
                dgates[t, b, first:last], dh_seq[t, b, first:last], dh_next[b, first:last], gates[t, b, first:last]
            )
        if workers > 1:
            arrive_and_wait(arrivals, worker, workers, T - t)
        step_product(product, dgates[t], W_h_T, panels, False, tile_mnk)
        copy_into(dh_next[:, first:last], product[:, :count])
