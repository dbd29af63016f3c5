"""A stack of recurrent layers with a linear softmax output, trained by hand-written BPTT.

The model owns its parameters and the work arrays of the last window shape it ran; the kernels in
charrnn.kernels do the arithmetic. Parameter names and shapes (legend in charrnn.kernels):
    layer{l}.W_x  (V or H, G*H)   input weights; layer 0 reads one-hot characters as a row gather
    layer{l}.W_h  (H, G*H)        recurrent weights
    layer{l}.b    (G*H,)          bias of the input projection
    layer{l}.b_hn (H,)            GRU only: bias inside the reset gate's product, as in PyTorch
    out.W (H, V), out.b (V,)      output layer
The carried state is one array (2, L, B, H): state[0] is h, state[1] is c (kept zero for gru/rnn).
"""

from dataclasses import asdict, dataclass

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.kernels import GATE_BLOCKS, GRU, LSTM, RNN
from charrnn.kernels.layers import (
    add_bias,
    bias_backward,
    embedding_backward,
    embedding_forward,
    matmul,
    matmul_accumulate,
    softmax_cross_entropy,
)
from charrnn.kernels.recurrent import (
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)

INIT_RANGE = 0.08  # char-rnn's uniform initialisation
FORGET_BIAS = 1.0  # char-rnn starts LSTMs remembering


class NonFiniteLoss(CharrnnError):
    """The loss came out NaN or infinite: the caller decides whether to roll back."""


@dataclass(frozen=True)
class ModelConfig:
    cell: str
    vocab_size: int
    hidden: int
    layers: int
    dropout: float = 0.0

    def __post_init__(self):
        if self.cell not in GATE_BLOCKS:
            raise CharrnnError(f"unknown model type {self.cell!r}; choose one of {', '.join(GATE_BLOCKS)}")
        if self.vocab_size < 2:
            raise CharrnnError(f"a vocabulary needs at least 2 symbols, got {self.vocab_size}")
        if self.hidden < 1 or self.layers < 1:
            raise CharrnnError(f"hidden size and layer count must be at least 1 (got {self.hidden}, {self.layers})")
        if not 0.0 <= self.dropout < 1.0:
            raise CharrnnError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def gate_width(self):
        return GATE_BLOCKS[self.cell] * self.hidden

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        try:
            return cls(
                cell=str(values["cell"]),
                vocab_size=int(values["vocab_size"]),
                hidden=int(values["hidden"]),
                layers=int(values["layers"]),
                dropout=float(values.get("dropout", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CharrnnError(f"model configuration is incomplete or malformed ({error})") from None


def parameter_shapes(config):
    shapes = {}
    H, GH = config.hidden, config.gate_width
    for layer in range(config.layers):
        shapes[f"layer{layer}.W_x"] = (config.vocab_size if layer == 0 else H, GH)
        shapes[f"layer{layer}.W_h"] = (H, GH)
        shapes[f"layer{layer}.b"] = (GH,)
        if config.cell == GRU:
            shapes[f"layer{layer}.b_hn"] = (H,)
    shapes["out.W"] = (H, config.vocab_size)
    shapes["out.b"] = (config.vocab_size,)
    return shapes


def init_params(config, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        params[name] = rng.uniform(-INIT_RANGE, INIT_RANGE, size=shape).astype(dtype)
    if config.cell == LSTM:
        H = config.hidden
        for layer in range(config.layers):
            params[f"layer{layer}.b"][H : 2 * H] = FORGET_BIAS
    return params


class _Workspace:
    """Arrays for one window shape, reused across calls so a training step allocates nothing large."""

    def __init__(self, config, batch, steps, dtype):
        L, H, GH, V = config.layers, config.hidden, config.gate_width, config.vocab_size
        T, B = steps, batch
        self.gates = np.empty((L, T, B, GH), dtype)
        self.h_seq = np.empty((L, T, B, H), dtype)
        self.c_seq = np.zeros((L, T, B, H), dtype)
        # LSTM: tanh(c_t); GRU: h_{t-1} W_hn + b_hn; the extra per-step value each backward needs.
        self.aux_seq = np.empty((L, T, B, H), dtype)
        self.dropped = np.empty((L, T, B, H), dtype)
        self.masks = np.empty((L, T, B, H), dtype)
        self.logits = np.empty((T * B, V), dtype)
        self.dlogits = np.empty((T * B, V), dtype)
        self.dgates_x = np.empty((T, B, GH), dtype)
        self.dgates_h = np.empty((T, B, GH), dtype) if config.cell == GRU else self.dgates_x
        self.dh_seq = np.empty((T, B, H), dtype)
        self.zero_state = np.zeros((B, H), dtype)
        self.no_grad = np.empty((0, V), dtype)


class Model:
    def __init__(self, config, params=None, dtype=np.float32, seed=0):
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise CharrnnError(f"model dtype must be float32 or float64, got {self.dtype}")
        if params is None:
            params = init_params(config, seed, self.dtype)
        self.params = self._checked_params(params)
        self._workspaces = {}
        self._last = None

    def _checked_params(self, params):
        shapes = parameter_shapes(self.config)
        if set(params) != set(shapes):
            missing = sorted(set(shapes) - set(params))
            extra = sorted(set(params) - set(shapes))
            raise CharrnnError(
                f"parameters do not match a {self.config.cell} model "
                f"(missing {missing or 'none'}, unexpected {extra or 'none'})"
            )
        checked = {}
        for name, shape in shapes.items():
            array = np.asarray(params[name])
            if array.shape != shape:
                raise CharrnnError(f"parameter {name} has shape {array.shape}, expected {shape} for this model")
            checked[name] = np.ascontiguousarray(array, dtype=self.dtype)
        return checked

    @property
    def num_parameters(self):
        return sum(p.size for p in self.params.values())

    def zeros_like_params(self):
        return {name: np.zeros_like(p) for name, p in self.params.items()}

    def initial_state(self, batch):
        return np.zeros((2, self.config.layers, batch, self.config.hidden), self.dtype)

    # ----------------------------------------------------------------------------------- forward
    def forward(self, inputs, targets, state, train=False, dropout_rng=None):
        """Runs a window; returns (mean loss in nats or None without targets, final state).

        inputs, targets: (B, T) integer ids; state: (2, L, B, H), left unchanged. The logits of
        every step stay in `self.last_logits` (T*B rows, time-major) until the next call.
        """
        inputs = self._checked_ids(inputs, "inputs")
        B, T = inputs.shape
        # A copy, so a caller updating its state in place cannot change what backward reads.
        state = self._checked_state(state, B).copy()
        if targets is not None:
            targets = self._checked_ids(targets, "targets")
            if targets.shape != inputs.shape:
                raise CharrnnError(f"targets shape {targets.shape} differs from inputs shape {inputs.shape}")
        use_dropout = train and self.config.dropout > 0.0
        if use_dropout and dropout_rng is None:
            raise CharrnnError("training with dropout needs a random generator (dropout_rng)")

        ws = self._workspace(B, T)
        cfg, p = self.config, self.params
        layer_input = None
        for layer in range(cfg.layers):
            gates = ws.gates[layer]
            W_x, bias = p[f"layer{layer}.W_x"], p[f"layer{layer}.b"]
            if layer == 0:
                embedding_forward(gates, W_x, bias, inputs)
            else:
                rows = gates.reshape(T * B, cfg.gate_width)
                matmul(rows, layer_input.reshape(T * B, cfg.hidden), W_x)
                add_bias(rows, bias)
            self._cell_forward(layer, ws, state)
            layer_input = ws.h_seq[layer]
            if use_dropout:
                keep = 1.0 - cfg.dropout
                mask = ws.masks[layer]
                np.less(dropout_rng.random(mask.shape, dtype=self.dtype), keep, out=mask)
                mask *= self.dtype.type(1.0 / keep)
                np.multiply(layer_input, mask, out=ws.dropped[layer])
                layer_input = ws.dropped[layer]

        matmul(ws.logits, layer_input.reshape(T * B, cfg.hidden), p["out.W"])
        add_bias(ws.logits, p["out.b"])

        final_state = np.empty_like(state)
        final_state[0] = ws.h_seq[:, T - 1]
        if cfg.cell == LSTM:
            final_state[1] = ws.c_seq[:, T - 1]
        else:
            final_state[1] = 0.0

        loss = None
        if targets is not None:
            targets_time_major = np.ascontiguousarray(targets.T).reshape(-1)
            gradient_out = ws.dlogits if train else ws.no_grad
            total = softmax_cross_entropy(gradient_out, ws.logits, targets_time_major, 1.0 / (B * T))
            loss = total / (B * T)
            if not np.isfinite(loss):
                raise NonFiniteLoss(f"the loss became {loss}")
        self._last = (inputs, state, ws, use_dropout, train and targets is not None)
        return loss, final_state

    @property
    def last_logits(self):
        return self._last[2].logits

    def _cell_forward(self, layer, ws, state):
        p, cell = self.params, self.config.cell
        W_h = p[f"layer{layer}.W_h"]
        h0 = state[0, layer]
        if cell == LSTM:
            lstm_forward(ws.h_seq[layer], ws.c_seq[layer], ws.aux_seq[layer], ws.gates[layer], W_h, h0, state[1, layer])
        elif cell == GRU:
            gru_forward(ws.h_seq[layer], ws.aux_seq[layer], ws.gates[layer], W_h, p[f"layer{layer}.b_hn"], h0)
        else:
            rnn_forward(ws.h_seq[layer], ws.gates[layer], W_h, h0)

    # ---------------------------------------------------------------------------------- backward
    def backward(self, grads, dfinal_state=None):
        """Accumulates (+=) the gradient of the last training forward's mean loss into `grads`.

        Returns the gradient with respect to the initial state, shaped like the state. A gradient
        reaching the final state (dfinal_state) is added, for tests that differentiate through it.
        """
        if self._last is None or not self._last[4]:
            raise CharrnnError("backward needs a preceding forward with train=True and targets")
        inputs, state, ws, use_dropout, _ = self._last
        cfg, p = self.config, self.params
        B, T = inputs.shape
        H, GH = cfg.hidden, cfg.gate_width
        dstate = np.zeros_like(state)

        top = ws.dropped[cfg.layers - 1] if use_dropout else ws.h_seq[cfg.layers - 1]
        self._weight_gradient(grads["out.W"], top.reshape(T * B, H).T, ws.dlogits)
        bias_backward(grads["out.b"], ws.dlogits)
        dh_seq = ws.dh_seq
        matmul(dh_seq.reshape(T * B, H), ws.dlogits, p["out.W"].T)

        for layer in range(cfg.layers - 1, -1, -1):
            if use_dropout:
                dh_seq *= ws.masks[layer]
            if dfinal_state is None:
                dh_last = dc_last = ws.zero_state
            else:
                dh_last = np.ascontiguousarray(dfinal_state[0, layer], dtype=self.dtype)
                dc_last = np.ascontiguousarray(dfinal_state[1, layer], dtype=self.dtype)
            self._cell_backward(layer, ws, state, dstate, dh_seq, dh_last, dc_last)

            dgates_x = ws.dgates_x.reshape(T * B, GH)
            dgates_h = ws.dgates_h.reshape(T * B, GH)
            h_seq = ws.h_seq[layer]
            dW_h = grads[f"layer{layer}.W_h"]
            # W_h met h0 at step 0 and h_{t-1} afterwards.
            self._weight_gradient(dW_h, state[0, layer].T, ws.dgates_h[0])
            if T > 1:
                self._weight_gradient(dW_h, h_seq[: T - 1].reshape((T - 1) * B, H).T, dgates_h[B:])
            bias_backward(grads[f"layer{layer}.b"], dgates_x)
            if cfg.cell == GRU:
                bias_backward(grads[f"layer{layer}.b_hn"], dgates_h[:, 2 * H :])
            if layer == 0:
                embedding_backward(grads["layer0.W_x"], ws.dgates_x, inputs)
            else:
                below = ws.dropped[layer - 1] if use_dropout else ws.h_seq[layer - 1]
                self._weight_gradient(grads[f"layer{layer}.W_x"], below.reshape(T * B, H).T, dgates_x)
                matmul(dh_seq.reshape(T * B, H), dgates_x, p[f"layer{layer}.W_x"].T)
        return dstate

    def _weight_gradient(self, dW, a_T, b):
        matmul_accumulate(dW, a_T, b, self._scratch_like(dW))

    def _scratch_like(self, array):
        key = ("scratch", array.shape)
        if key not in self._workspaces:
            self._workspaces[key] = np.empty(array.shape, self.dtype)
        return self._workspaces[key]

    def _cell_backward(self, layer, ws, state, dstate, dh_seq, dh_last, dc_last):
        p, cell = self.params, self.config.cell
        W_h = p[f"layer{layer}.W_h"]
        dh0 = dstate[0, layer]
        if cell == LSTM:
            lstm_backward(
                ws.dgates_x, dh0, dstate[1, layer], dh_seq, dh_last, dc_last,
                ws.gates[layer], ws.c_seq[layer], ws.aux_seq[layer], state[1, layer], W_h,
            )
        elif cell == GRU:
            gru_backward(
                ws.dgates_x, ws.dgates_h, dh0, dh_seq, dh_last,
                ws.gates[layer], ws.h_seq[layer], ws.aux_seq[layer], state[0, layer], W_h,
            )
        else:
            rnn_backward(ws.dgates_x, dh0, dh_seq, dh_last, ws.gates[layer], W_h)

    # ------------------------------------------------------------------------------ conveniences
    def loss_and_grads(self, inputs, targets, state, grads, dropout_rng=None):
        loss, final_state = self.forward(inputs, targets, state, train=True, dropout_rng=dropout_rng)
        self.backward(grads)
        return loss, final_state

    def loss(self, inputs, targets, state):
        return self.forward(inputs, targets, state, train=False)

    def step(self, char_ids, state):
        """Reads one character per stream; updates `state` in place and returns logits (B, V)."""
        ids = np.asarray(char_ids).reshape(-1, 1)
        _, final_state = self.forward(ids, None, state)
        state[...] = final_state
        return self.last_logits.copy()

    def record(self, char_ids):
        """Activations after each character of one stream, from a zero state (for inspection)."""
        ids = np.asarray(char_ids).reshape(1, -1)
        T = ids.shape[1]
        self.forward(ids, None, self.initial_state(1))
        ws = self._last[2]
        L, H, GH = self.config.layers, self.config.hidden, self.config.gate_width
        return {
            "h": ws.h_seq[:, :, 0].transpose(1, 0, 2).copy(),
            "c": ws.c_seq[:, :, 0].transpose(1, 0, 2).copy().reshape(T, L, H),
            "gates": ws.gates[:, :, 0].transpose(1, 0, 2).copy().reshape(T, L, GH),
            "logits": ws.logits.copy(),
        }

    # -------------------------------------------------------------------------------- validation
    def _workspace(self, batch, steps):
        key = (batch, steps)
        if key not in self._workspaces:
            windows = [k for k in self._workspaces if k[0] != "scratch"]
            if len(windows) >= 4:  # evaluation's short last window should not pin memory forever
                del self._workspaces[windows[0]]
            self._workspaces[key] = _Workspace(self.config, batch, steps, self.dtype)
        return self._workspaces[key]

    def _checked_ids(self, ids, what):
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise CharrnnError(f"{what} must be a non-empty (batch, steps) array, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise CharrnnError(f"{what} must hold integer character ids, got dtype {ids.dtype}")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.config.vocab_size:
            raise CharrnnError(
                f"{what} hold character id {high if high >= self.config.vocab_size else low}, "
                f"outside this model's vocabulary of {self.config.vocab_size} symbols"
            )
        return np.ascontiguousarray(ids, dtype=np.int64)

    def _checked_state(self, state, batch):
        expected = (2, self.config.layers, batch, self.config.hidden)
        if state.shape != expected:
            raise CharrnnError(f"state has shape {state.shape}, expected {expected} (2, layers, batch, hidden)")
        return np.ascontiguousarray(state, dtype=self.dtype)
