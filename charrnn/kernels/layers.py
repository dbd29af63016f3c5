"""Non-recurrent pieces: the one-hot input layer as a row gather, matrix products, bias, loss.

All matrix products go through charrnn.kernels.blas (Numba's gemm helper, the BLAS behind np.dot)
so that every BLAS call in a training step uses one BLAS library and one thread pool (two OpenBLAS
pools spinning on two cores slow each other down).
"""

import math

from charrnn.jit import njit
from charrnn.kernels.blas import gemm


@njit
def embedding_forward(gates, W_x, bias, ids):
    """gates[t, b] = W_x[ids[b, t]] + bias: a one-hot row times W_x without the matrix product."""
    T, B, GH = gates.shape
    for t in range(T):
        for b in range(B):
            row = W_x[ids[b, t]]
            for k in range(GH):
                gates[t, b, k] = row[k] + bias[k]


@njit
def embedding_backward(dW_x, dgates, ids):
    T, B, GH = dgates.shape
    for t in range(T):
        for b in range(B):
            row = dW_x[ids[b, t]]
            for k in range(GH):
                row[k] += dgates[t, b, k]


@njit
def matmul(out, a, b):
    """out = a @ b (a or b may be transposed views)."""
    gemm(out, a, b, 0.0)


@njit
def matmul_accumulate(out, a, b):
    """out += a @ b, in place (BLAS's beta = 1)."""
    gemm(out, a, b, 1.0)


@njit
def add_bias(out, bias):
    rows, cols = out.shape
    for r in range(rows):
        for k in range(cols):
            out[r, k] += bias[k]


@njit
def bias_backward(dbias, dout):
    rows, cols = dout.shape
    for r in range(rows):
        for k in range(cols):
            dbias[k] += dout[r, k]


@njit
def softmax_cross_entropy(dlogits, logits, targets, scale):
    """Returns the summed loss (nats, float64) of rows `logits` (N, V) against `targets` (N,).

    Writes scale * (softmax(logits) - onehot(targets)) into dlogits when dlogits has N rows; pass an
    empty (0, V) array to skip the gradient (evaluation). Each exponential is computed once, in the
    logits' dtype, and summed in float64.
    """
    N, V = logits.shape
    want_grad = dlogits.shape[0] == N
    total = 0.0
    for n in range(N):
        row = logits[n]
        peak = row[0]
        for v in range(1, V):
            if row[v] > peak:
                peak = row[v]
        normaliser = 0.0
        if want_grad:
            out = dlogits[n]
            for v in range(V):
                e = math.exp(row[v] - peak)
                out[v] = e
                normaliser += e
            factor = out.dtype.type(scale / normaliser)
            for v in range(V):
                out[v] *= factor
            out[targets[n]] -= out.dtype.type(scale)
        else:
            for v in range(V):
                normaliser += math.exp(row[v] - peak)
        total += math.log(normaliser) + peak - row[targets[n]]
    return total
