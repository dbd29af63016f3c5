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
`dh0`, `dc0` receive the gradients of the initial state.
"""

import math

import numpy as np

from charrnn.jit import njit


@njit
def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@njit
def tanh(x):
    # 2*sigmoid(2x) - 1 costs one exp; libm's tanh is several times slower here.
    return 2.0 / (1.0 + math.exp(-2.0 * x)) - 1.0


@njit
def lstm_forward(h_seq, c_seq, tanh_c_seq, gates, W_h, h0, c0):
    T, B, GH = gates.shape
    H = GH // 4
    recurrent = np.empty((B, GH), dtype=gates.dtype)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        c_prev = c0 if t == 0 else c_seq[t - 1]
        np.dot(h_prev, W_h, recurrent)
        a = gates[t]
        for b in range(B):
            for j in range(H):
                i = sigmoid(a[b, j] + recurrent[b, j])
                f = sigmoid(a[b, H + j] + recurrent[b, H + j])
                o = sigmoid(a[b, 2 * H + j] + recurrent[b, 2 * H + j])
                g = tanh(a[b, 3 * H + j] + recurrent[b, 3 * H + j])
                c = f * c_prev[b, j] + i * g
                tanh_c = tanh(c)
                a[b, j] = i
                a[b, H + j] = f
                a[b, 2 * H + j] = o
                a[b, 3 * H + j] = g
                c_seq[t, b, j] = c
                tanh_c_seq[t, b, j] = tanh_c
                h_seq[t, b, j] = o * tanh_c


@njit
def lstm_backward(dgates, dh0, dc0, dh_seq, dh_last, dc_last, gates, c_seq, tanh_c_seq, c0, W_h):
    T, B, GH = gates.shape
    H = GH // 4
    dh_next = dh_last.copy()
    dc_next = dc_last.copy()
    W_h_T = W_h.T
    for t in range(T - 1, -1, -1):
        c_prev = c0 if t == 0 else c_seq[t - 1]
        a = gates[t]
        d = dgates[t]
        for b in range(B):
            for j in range(H):
                i = a[b, j]
                f = a[b, H + j]
                o = a[b, 2 * H + j]
                g = a[b, 3 * H + j]
                tanh_c = tanh_c_seq[t, b, j]
                dh = dh_seq[t, b, j] + dh_next[b, j]
                dc = dc_next[b, j] + dh * o * (1.0 - tanh_c * tanh_c)
                d[b, j] = dc * g * i * (1.0 - i)
                d[b, H + j] = dc * c_prev[b, j] * f * (1.0 - f)
                d[b, 2 * H + j] = dh * tanh_c * o * (1.0 - o)
                d[b, 3 * H + j] = dc * i * (1.0 - g * g)
                dc_next[b, j] = dc * f
        np.dot(d, W_h_T, dh_next)
    dh0[:] = dh_next
    dc0[:] = dc_next


@njit
def gru_forward(h_seq, hn_seq, gates, W_h, b_hn, h0):
    T, B, GH = gates.shape
    H = GH // 3
    recurrent = np.empty((B, GH), dtype=gates.dtype)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        np.dot(h_prev, W_h, recurrent)
        a = gates[t]
        for b in range(B):
            for j in range(H):
                r = sigmoid(a[b, j] + recurrent[b, j])
                z = sigmoid(a[b, H + j] + recurrent[b, H + j])
                hn = recurrent[b, 2 * H + j] + b_hn[j]
                n = tanh(a[b, 2 * H + j] + r * hn)
                a[b, j] = r
                a[b, H + j] = z
                a[b, 2 * H + j] = n
                hn_seq[t, b, j] = hn
                h_seq[t, b, j] = (1.0 - z) * n + z * h_prev[b, j]


@njit
def gru_backward(dgates_x, dgates_h, dh0, dh_seq, dh_last, gates, h_seq, hn_seq, h0, W_h):
    T, B, GH = gates.shape
    H = GH // 3
    dh_next = dh_last.copy()
    through_W_h = np.empty_like(dh_next)
    W_h_T = W_h.T
    for t in range(T - 1, -1, -1):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        a = gates[t]
        dx = dgates_x[t]
        dr_h = dgates_h[t]
        for b in range(B):
            for j in range(H):
                r = a[b, j]
                z = a[b, H + j]
                n = a[b, 2 * H + j]
                dh = dh_seq[t, b, j] + dh_next[b, j]
                dn_pre = dh * (1.0 - z) * (1.0 - n * n)
                dr_pre = dn_pre * hn_seq[t, b, j] * r * (1.0 - r)
                dz_pre = dh * (h_prev[b, j] - n) * z * (1.0 - z)
                dx[b, j] = dr_pre
                dx[b, H + j] = dz_pre
                dx[b, 2 * H + j] = dn_pre
                dr_h[b, j] = dr_pre
                dr_h[b, H + j] = dz_pre
                dr_h[b, 2 * H + j] = dn_pre * r
                dh_next[b, j] = dh * z
        np.dot(dr_h, W_h_T, through_W_h)
        dh_next += through_W_h
    dh0[:] = dh_next


@njit
def rnn_forward(h_seq, gates, W_h, h0):
    T, B, H = gates.shape
    recurrent = np.empty((B, H), dtype=gates.dtype)
    for t in range(T):
        h_prev = h0 if t == 0 else h_seq[t - 1]
        np.dot(h_prev, W_h, recurrent)
        a = gates[t]
        for b in range(B):
            for j in range(H):
                h = tanh(a[b, j] + recurrent[b, j])
                a[b, j] = h
                h_seq[t, b, j] = h


@njit
def rnn_backward(dgates, dh0, dh_seq, dh_last, gates, W_h):
    T, B, H = gates.shape
    dh_next = dh_last.copy()
    W_h_T = W_h.T
    for t in range(T - 1, -1, -1):
        a = gates[t]
        d = dgates[t]
        for b in range(B):
            for j in range(H):
                h = a[b, j]
                d[b, j] = (dh_seq[t, b, j] + dh_next[b, j]) * (1.0 - h * h)
        np.dot(d, W_h_T, dh_next)
    dh0[:] = dh_next
