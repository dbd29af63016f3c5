"""Compiled kernels: only @njit functions, arrays in, preallocated arrays out, no I/O.

Dimension legend, used by every kernel and by the model around them:
    B   streams in a minibatch
    T   time steps in a window
    V   vocabulary size
    H   hidden size of every layer
    L   number of stacked layers
    G   gate blocks per cell (LSTM and LN-LSTM 4, GRU 3, RNN 1); GH = G * H
Sequence arrays are time-major, (T, B, ...), so each step's slice is contiguous.

Gate order along the GH axis (block k occupies columns k*H .. (k+1)*H):
    LSTM  i, f, o, g   input, forget, output gates (sigmoid) then the candidate g (tanh)
                        c' = f * c + i * g,   h' = o * tanh(c')
    GRU   r, z, n      reset, update gates (sigmoid) then the candidate n (tanh), PyTorch's form:
                        n = tanh(x W_xn + b_n + r * (h W_hn + b_hn)),   h' = (1 - z) * n + z * h
    RNN   a            h' = tanh(x W_x + h W_h + b)
    LN-LSTM i, f, o, g as LSTM, on layer-normalised projections (Ba, Kiros and Hinton 2016):
                        a = LN(x W_x; gain_x, bias_x) + LN(h W_h; gain_h, bias_h) + b
                        c' = f * c + i * g,   h' = o * tanh(LN(c'; gain_c, bias_c))
          LN(v; gain, bias) = gain * (v - mean(v)) / sqrt(var(v) + LN_EPSILON) + bias over one row's
          4H (or H) values.
"""

LSTM, GRU, RNN, LNLSTM = "lstm", "gru", "rnn", "lnlstm"
GATE_BLOCKS = {LSTM: 4, GRU: 3, RNN: 1, LNLSTM: 4}
# The gate blocks by name, in the order above.
GATE_NAMES = {LSTM: ("i", "f", "o", "g"), GRU: ("r", "z", "n"), RNN: ("a",), LNLSTM: ("i", "f", "o", "g")}
LN_EPSILON = 1e-5  # added to the variance, as in torch.nn.LayerNorm
