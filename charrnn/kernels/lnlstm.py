"""Layer normalisation and the layer-normalised LSTM (Ba, Kiros and Hinton 2016), forward and BPTT.

The cell (legend and formulas in charrnn.kernels) normalises three things per row: the input
projection x W_x (for all T*B rows before the time loop: `layer_norm_forward`), the recurrent
projection h_{t-1} W_h and the new cell state c_t (inside the loop: `lnlstm_cell`). The input
projection's shift is bias_x + b: both are added to every row, so the caller folds them into one.

What backward needs besides the gate activations (kept in `gates`, as for the LSTM): the normalised
values v_hat = (v - mean) * rstd of each normalised row and its rstd = 1 / sqrt(var + eps):
    x_hat_seq (T, B, GH), r_hat_seq (T, B, GH), c_hat_seq (T, B, H), rstd_seq (T, B, 3): x, r, c;
and tanh_m_seq (T, B, H) = tanh(LN(c_t)), which h_t = o * tanh_m also needs.

Backward of y = gain * v_hat + bias with respect to v, for one row of D values, d = dy * gain:
    dv = rstd * (d - mean(d) - v_hat * mean(d * v_hat))
and gain, bias collect sum(dy * v_hat), sum(dy) over rows (`layer_norm_param_backward`).

Statistics are summed in float64 in a fixed order and rounded once, so a row's result does not
depend on the rows around it. The cell needs every unit of a row at once, so these kernels always
run all H units on one thread (a layer-normalised LSTM trains with the batch split only).
"""

import math

from charrnn.jit import njit
from charrnn.kernels import LN_EPSILON
from charrnn.kernels.panels import packed_weights, product_space, step_product
from charrnn.kernels.recurrent import copy_into, sigmoid, tanh


@njit
def normalise(v_hat, v):
    """v_hat = (v - mean(v)) * rstd for one row; returns rstd in v's dtype. v_hat may be v."""
    D = v.shape[0]
    total = 0.0
    for k in range(D):
        total += v[k]
    mean = total / D
    spread = 0.0
    for k in range(D):
        centred = v[k] - mean
        spread += centred * centred
    rstd = 1.0 / math.sqrt(spread / D + LN_EPSILON)
    for k in range(D):
        v_hat[k] = (v[k] - mean) * rstd
    return v.dtype.type(rstd)


@njit
def layer_norm_forward(out, v_hat, rstd, v, gain, shift):
    """Rows of v (N, D): v_hat = normalised rows, out = gain * v_hat + shift; rstd (N,). out may be v."""
    N, D = v.shape
    for n in range(N):
        rstd[n] = normalise(v_hat[n], v[n])
        for k in range(D):
            out[n, k] = gain[k] * v_hat[n, k] + shift[k]


@njit
def normalised_backward(dv, dy, v_hat, rstd, gain):
    """One row: dv = d LN / d v applied to dy (see the module docstring). dv may be dy."""
    D = dy.shape[0]
    mean_d = 0.0
    mean_dv = 0.0
    for k in range(D):
        d = dy[k] * gain[k]
        mean_d += d
        mean_dv += d * v_hat[k]
    mean_d /= D
    mean_dv /= D
    for k in range(D):
        dv[k] = rstd * (dy[k] * gain[k] - mean_d - v_hat[k] * mean_dv)


@njit
def layer_norm_backward(dv, dy, v_hat, rstd, gain):
    """Rows (N, D): dv from dy through LN (dv may be dy); rstd (N,)."""
    for n in range(dy.shape[0]):
        normalised_backward(dv[n], dy[n], v_hat[n], rstd[n], gain)


@njit
def layer_norm_param_backward(dgain, dshift, dy, v_hat):
    """dgain += sum over rows of dy * v_hat, dshift += sum of dy; dy, v_hat (N, D)."""
    N, D = dy.shape
    for n in range(N):
        for k in range(D):
            dgain[k] += dy[n, k] * v_hat[n, k]
            dshift[k] += dy[n, k]


@njit
def lnlstm_cell(a, r, r_hat, rstd, gain_h, shift_h, c_prev, c_out, c_hat, gain_c, shift_c, tanh_m, h_out):
    """One row: a (GH,) the normalised input projection with its shift in, gate activations out;
    r (GH,) = h_{t-1} W_h; r_hat, c_hat, tanh_m receive what backward needs, rstd (3,) its r and c
    entries (1, 2)."""
    H = c_prev.shape[0]
    rstd[1] = normalise(r_hat, r)
    for k in range(4 * H):
        a[k] += gain_h[k] * r_hat[k] + shift_h[k]
    sig = a[: 3 * H]
    for k in range(3 * H):
        sig[k] = sigmoid(sig[k])
    g = a[3 * H :]
    for j in range(H):
        g[j] = tanh(g[j])
    i, f, o = a[:H], a[H : 2 * H], a[2 * H : 3 * H]
    for j in range(H):
        c_out[j] = f[j] * c_prev[j] + i[j] * g[j]
    rstd[2] = normalise(c_hat, c_out)
    for j in range(H):
        tanh_m[j] = tanh(gain_c[j] * c_hat[j] + shift_c[j])
    for j in range(H):
        h_out[j] = o[j] * tanh_m[j]


@njit
def lnlstm_forward(
    h_seq,
    c_seq,
    tanh_m_seq,
    gates,
    r_hat_seq,
    c_hat_seq,
    rstd_seq,
    W_h,
    gain_h,
    shift_h,
    gain_c,
    shift_c,
    h0,
    c0,
    tile_mnk,
):
    """Forward over T steps; gates (T, B, GH) hold the normalised input projections (shift included)."""
    T, B, GH = gates.shape
    panels = packed_weights(W_h, T)
    recurrent = product_space(B, W_h, panels)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        c_prev = c0 if t == 0 else c_seq[t - 1]
        step_product(recurrent, h_prev, W_h, panels, False, tile_mnk)
        for b in range(B):
            lnlstm_cell(
                gates[t, b],
                recurrent[b, :GH],
                r_hat_seq[t, b],
                rstd_seq[t, b],
                gain_h,
                shift_h,
                c_prev[b],
                c_seq[t, b],
                c_hat_seq[t, b],
                gain_c,
                shift_c,
                tanh_m_seq[t, b],
                h_seq[t, b],
            )


@njit
def lnlstm_cell_backward(da, dr, dm, dc_next, dh_above, dh_next, a, r_hat, rstd, gain_h, c_prev, c_hat, gain_c, tanh_m):
    """One row: da (GH,) receives d(a), the gates' pre-activation; dr (GH,) d(h_{t-1} W_h); dm (H,)
    d(LN(c_t)); dc_next (H,) goes from dc_t to dc_{t-1}."""
    H = c_prev.shape[0]
    one = da.dtype.type(1)
    i, f, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
    di, df, do, dg = da[:H], da[H : 2 * H], da[2 * H : 3 * H], da[3 * H :]
    for j in range(H):
        dh = dh_above[j] + dh_next[j]
        do[j] = dh * tanh_m[j] * o[j] * (one - o[j])
        dm[j] = dh * o[j] * (one - tanh_m[j] * tanh_m[j])
    # The gradient through LN(c_t) lands in di first (a scratch row until di itself is written).
    normalised_backward(di, dm, c_hat, rstd[2], gain_c)
    for j in range(H):
        dc = dc_next[j] + di[j]
        di[j] = dc * g[j] * i[j] * (one - i[j])
        df[j] = dc * c_prev[j] * f[j] * (one - f[j])
        dg[j] = dc * i[j] * (one - g[j] * g[j])
        dc_next[j] = dc * f[j]
    normalised_backward(dr, da, r_hat, rstd[1], gain_h)


@njit
def lnlstm_backward(
    dgates,
    drec,
    dm_seq,
    dh0,
    dc0,
    dh_seq,
    dh_last,
    dc_last,
    gates,
    c_seq,
    tanh_m_seq,
    r_hat_seq,
    c_hat_seq,
    rstd_seq,
    gain_h,
    gain_c,
    c0,
    W_h_T,
    tile_mnk,
):
    """BPTT: dgates (T, B, GH) receives d(a), drec (T, B, GH) d(h_{t-1} W_h) (what W_h and the
    previous h see), dm_seq (T, B, H) d(LN(c_t)) (what gain_c and bias_c see); dh0, dc0 receive the
    initial state's gradients. W_h_T (GH, H) is W_h transposed (a view will do)."""
    T, B, GH = gates.shape
    dh_next, dc_next = dh0, dc0
    copy_into(dh_next, dh_last)
    copy_into(dc_next, dc_last)
    H = dh_next.shape[1]
    panels = packed_weights(W_h_T, T)
    product = product_space(B, W_h_T, panels)
    for t in range(T - 1, -1, -1):
        c_prev = c0 if t == 0 else c_seq[t - 1]
        for b in range(B):
            lnlstm_cell_backward(
                dgates[t, b],
                drec[t, b],
                dm_seq[t, b],
                dc_next[b],
                dh_seq[t, b],
                dh_next[b],
                gates[t, b],
                r_hat_seq[t, b],
                rstd_seq[t, b],
                gain_h,
                c_prev[b],
                c_hat_seq[t, b],
                gain_c,
                tanh_m_seq[t, b],
            )
        step_product(product, drec[t], W_h_T, panels, False, tile_mnk)
        copy_into(dh_next, product[:, :H])
