"""A stack of recurrent layers with a linear softmax output, trained by hand-written BPTT.

The model owns its parameters and the work arrays of the last window shape it ran; the kernels in
charrnn.kernels do the arithmetic. Parameter names and shapes (legend in charrnn.kernels):
    layer{l}.W_x  (V or H, G*H)   input weights; layer 0 reads one-hot characters as a row gather
    layer{l}.W_h  (H, G*H)        recurrent weights
    layer{l}.b    (G*H,)          bias of the input projection
    layer{l}.<extra>              a cell type's own parameters (charrnn.cells), e.g. the GRU's b_hn (H,),
                                  the bias inside its reset gate's product, as in PyTorch
    out.W (H, V), out.b (V,)      output layer
The carried state is one array (2, L, B, H): state[0] is h, state[1] is c (kept zero for cells
without one). What differs between cell types is described once, in charrnn.cells.

Regularisation in training: inverted dropout on each layer's output h (between layers and before the
output layer; `dropout`), and DropConnect on the recurrent weights (`weight_drop`, AWD-LSTM's weight
drop): each window multiplies every W_h by its own Bernoulli(1 - p) / (1 - p) mask, the same at every
step, so the state's own path is regularised without breaking what it carries from step to step.

Forward and backward run on several threads (the BLAS itself on one, charrnn.parallel), cut as the
model's plan says (charrnn.plan): by streams, each thread a slice of the batch whose gradients are
summed, or by hidden units, each thread its share of every layer's units for all streams, meeting
the others once per step (charrnn.unit_split cuts that work). A plan is a value, so one machine
reproduces a run bit for bit.
"""

from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from charrnn.cells import CELLS, cell_named
from charrnn.errors import CharrnnError
from charrnn.kernels.layers import (
    add_bias,
    bias_backward,
    embedding_backward,
    embedding_forward,
    matmul,
    matmul_accumulate,
    softmax_cross_entropy,
)
from charrnn.kernels.sync import ARRIVAL_STRIDE
from charrnn.parallel import pin_blas, run_parts, small_gemm_budget, split_rows, thread_budget
from charrnn.plan import Plan, unit_permutation, unit_ranges
from charrnn.unit_split import backward_units, forward_units

_NO_ARRIVALS = np.zeros(ARRIVAL_STRIDE, np.int64)  # a lone thread meets nobody
INIT_RANGE = 0.08  # char-rnn's uniform initialisation
# Layer 0's W_x is a table of per-character rows (an embedding folded into the gates), drawn like
# nn.Embedding's N(0, 1). With char-rnn's +-0.08 the one-hot input barely moves the gates and the
# loss sits on the unigram plateau for ~150 iterations. On Tiny Shakespeare, 2x128, val loss after
# 400 iterations: 2.28 -> 1.93 with Adam 2e-3, 2.10 -> 1.80 with 4e-3 (scripts/init_experiment.py).
INPUT_INIT_STD = 1.0


class NonFiniteLoss(CharrnnError):
    """The loss came out NaN or infinite: the caller decides whether to roll back."""


@dataclass(frozen=True)
class ModelConfig:
    cell: str
    vocab_size: int
    hidden: int
    layers: int
    dropout: float = 0.0
    weight_drop: float = 0.0

    def __post_init__(self):
        cell_named(self.cell)
        if self.vocab_size < 2:
            raise CharrnnError(f"a vocabulary needs at least 2 symbols, got {self.vocab_size}")
        if self.hidden < 1 or self.layers < 1:
            raise CharrnnError(f"hidden size and layer count must be at least 1 (got {self.hidden}, {self.layers})")
        if not 0.0 <= self.dropout < 1.0:
            raise CharrnnError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.weight_drop < 1.0:
            raise CharrnnError(f"weight drop must be in [0, 1), got {self.weight_drop}")

    @property
    def gate_width(self):
        return CELLS[self.cell].gate_blocks * self.hidden

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
                weight_drop=float(values.get("weight_drop", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CharrnnError(f"model configuration is incomplete or malformed ({error})") from None


def parameter_shapes(config):
    shapes = {}
    cell, H = CELLS[config.cell], config.hidden
    for layer in range(config.layers):
        shapes.update(cell.parameter_shapes(layer, config.vocab_size if layer == 0 else H, H))
    shapes["out.W"] = (H, config.vocab_size)
    shapes["out.b"] = (config.vocab_size,)
    return shapes


def init_params(config, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        params[name] = rng.uniform(-INIT_RANGE, INIT_RANGE, size=shape).astype(dtype)
    params["layer0.W_x"] = rng.normal(0.0, INPUT_INIT_STD, size=params["layer0.W_x"].shape).astype(dtype)
    for layer in range(config.layers):
        CELLS[config.cell].initialise(params, layer, config.hidden)
    return params


class _Workspace:
    """Arrays for one slice of streams of one window shape, reused so a training step allocates
    nothing large. In the batch split each slice has its own; in the units split one holds every
    stream and the threads share it, each writing only its own units and gate columns."""

    def __init__(self, config, batch, steps, dtype):
        L, H, GH, V = config.layers, config.hidden, config.gate_width, config.vocab_size
        T, B = steps, batch
        self.gates = np.empty((L, T, B, GH), dtype)
        self.h_seq = np.empty((L, T, B, H), dtype)
        self.c_seq = np.zeros((L, T, B, H), dtype)
        # LSTM: tanh(c_t); LN-LSTM: tanh(LN(c_t)); GRU: h_{t-1} W_hn + b_hn; what each backward needs per step.
        self.aux_seq = np.empty((L, T, B, H), dtype)
        self.dropped = np.empty((L, T, B, H), dtype)
        self.masks = np.empty((L, T, B, H), dtype)
        self.logits = np.empty((T * B, V), dtype)
        self.dlogits = np.empty((T * B, V), dtype)
        self.targets = np.empty(T * B, np.int64)
        self.dgates_x = np.empty((T, B, GH), dtype)
        cell = CELLS[config.cell]
        self.dgates_h = np.empty((T, B, GH), dtype) if cell.separate_dgates_h else self.dgates_x
        self.cell_work = cell.work(L, T, B, H, GH, dtype) if cell.work else None
        self.dh_seq = np.empty((T, B, H), dtype)
        self.zero_state = np.zeros((B, H), dtype)
        self.no_grad = np.empty((0, V), dtype)
        self.grads = None  # this slice's gradients, when it is not the slice writing the caller's


class _Window:
    """The work arrays of one window shape under one plan.

    batch split: a workspace per slice of streams (`rows`), each slice on its own thread.
    units split: one workspace for all streams, its gate axis grouped by thread (`perm`), and the
    grouped copies of the gate-side weights and their gradients (one per layer).
    """

    def __init__(self, config, batch, steps, dtype, plan):
        parts = plan.parts(batch, config.hidden)
        self.split = plan.split if parts > 1 and CELLS[config.cell].splits_units else "batch"
        if self.split == "batch":
            self.rows = split_rows(batch, parts)
            self.parts = [_Workspace(config, rows.stop - rows.start, steps, dtype) for rows in self.rows]
            return
        H, G, L = config.hidden, CELLS[config.cell].gate_blocks, config.layers
        self.rows = [slice(0, batch)]
        self.parts = [_Workspace(config, batch, steps, dtype)]
        self.units = unit_ranges(H, parts)
        self.perm = unit_permutation(H, G, parts)
        self.arrivals = np.zeros(parts * ARRIVAL_STRIDE, np.int64)
        self.output_rows = split_rows(batch * steps, parts)
        shapes = parameter_shapes(config)
        self.grads = [
            {k: np.zeros(shapes[f"layer{layer}.{k}"], dtype) for k in ("W_x", "W_h", "b")} for layer in range(L)
        ]
        self.weights = None  # per forward: the grouped weights it used, for its backward


class Model:
    def __init__(self, config, params=None, dtype=np.float32, seed=0, plan=None):
        pin_blas()  # before any product, so every product of this process sums in one order
        self.config = config
        self.cell = CELLS[config.cell]
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise CharrnnError(f"model dtype must be float32 or float64, got {self.dtype}")
        if params is None:
            params = init_params(config, seed, self.dtype)
        self.params = self._checked_params(params)
        # How windows are cut between threads (charrnn.plan); the default splits streams between
        # as many threads as the budget allows. A trainer sets the plan chosen for its shape.
        self.plan = plan if plan is not None else Plan("batch", thread_budget())
        if self.plan.split == "units" and not self.cell.splits_units:
            raise CharrnnError(
                f"{config.cell} models cannot share their units between threads (each step needs all of them); "
                "use the batch split (--plan batch or auto)"
            )
        # Cells that add b inside their time loop (charrnn.cells) read the input projection without it.
        self._no_bias = np.zeros(config.gate_width, self.dtype)
        self._windows = {}
        self._last = None
        self._dropped_W_h = None  # per layer: W_h * mask / keep, and the scaled mask, when weight drop is on
        # (first, total) when this process trains streams first.. of a batch of `total` shared between
        # processes (charrnn.distributed): training windows then draw the whole batch's dropout masks and
        # keep their rows, and scale the loss by the whole batch, so the processes' losses and gradients
        # add up to one process's. None: the window is the whole batch.
        self.stream_share = None

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
        use_weight_drop = train and self.config.weight_drop > 0.0
        if (use_dropout or use_weight_drop) and dropout_rng is None:
            raise CharrnnError("training with dropout needs a random generator (dropout_rng)")

        window = self._window(B, T)
        if use_dropout:
            self._draw_masks(window, dropout_rng)
        recurrent = self._recurrent_weights(dropout_rng if use_weight_drop else None)
        want_grad = train and targets is not None
        scale = 1.0 / (self._batch_total(B, train) * T)
        if window.split == "batch":
            tasks = [
                partial(
                    self._forward_part,
                    ws,
                    inputs[rows],
                    None if targets is None else targets[rows],
                    state[:, :, rows],
                    use_dropout,
                    want_grad,
                    scale,
                    recurrent,
                )
                for ws, rows in zip(window.parts, window.rows)
            ]
            totals = run_parts(tasks)
        else:
            totals = forward_units(self, window, inputs, targets, state, use_dropout, want_grad, scale, recurrent)

        final_state = np.empty_like(state)
        for ws, rows in zip(window.parts, window.rows):
            final_state[0, :, rows] = ws.h_seq[:, T - 1]
            final_state[1, :, rows] = ws.c_seq[:, T - 1] if self.cell.has_memory else 0.0
        loss = None
        if targets is not None:
            loss = sum(totals) / (self._batch_total(B, train) * T)
            if not np.isfinite(loss):
                raise NonFiniteLoss(f"the loss became {loss}")
        self._last = (inputs, state, window, use_dropout, want_grad, recurrent, use_weight_drop)
        return loss, final_state

    def _recurrent_weights(self, weight_drop_rng):
        """Each layer's W_h as this window uses it: the parameters, or (given a generator) dropped ones."""
        cfg = self.config
        names = [f"layer{layer}.W_h" for layer in range(cfg.layers)]
        if weight_drop_rng is None:
            return [self.params[name] for name in names]
        keep = 1.0 - cfg.weight_drop
        if self._dropped_W_h is None:
            self._dropped_W_h = [(np.empty_like(self.params[name]), np.empty_like(self.params[name])) for name in names]
        used = []
        for name, (dropped, mask) in zip(names, self._dropped_W_h):
            uniforms = weight_drop_rng.random(mask.shape, dtype=self.dtype)
            np.less(uniforms, keep, out=mask)
            mask *= self.dtype.type(1.0 / keep)
            np.multiply(self.params[name], mask, out=dropped)
            used.append(dropped)
        return used

    def _batch_total(self, batch, train):
        """Streams of the whole batch this window is part of (see stream_share)."""
        return self.stream_share[1] if train and self.stream_share is not None else batch

    def _draw_masks(self, window, rng):
        """Inverted-dropout masks, drawn for the whole batch layer by layer, then cut into slices."""
        cfg = self.config
        keep = 1.0 - cfg.dropout
        T = window.parts[0].masks.shape[1]
        B = window.rows[-1].stop
        first, total = self.stream_share or (0, B)
        for layer in range(cfg.layers):
            uniforms = rng.random((T, total, cfg.hidden), dtype=self.dtype)
            for ws, rows in zip(window.parts, window.rows):
                mask = ws.masks[layer]
                np.less(uniforms[:, first + rows.start : first + rows.stop], keep, out=mask)
                mask *= self.dtype.type(1.0 / keep)

    def _forward_part(self, ws, inputs, targets, state, use_dropout, want_grad, scale, recurrent):
        """Forward of one slice of streams; returns its summed loss (0.0 without targets)."""
        cfg, p = self.config, self.params
        B, T = inputs.shape
        layer_input = None
        whole = (0, cfg.hidden, 0, 1, _NO_ARRIVALS)
        for layer in range(cfg.layers):
            gates = ws.gates[layer]
            W_x, bias = p[f"layer{layer}.W_x"], self._input_bias(layer)
            if layer == 0:
                embedding_forward(gates, W_x, bias, inputs)
            else:
                rows = gates.reshape(T * B, cfg.gate_width)
                matmul(rows, layer_input.reshape(T * B, cfg.hidden), W_x)
                if self.cell.input_bias:
                    add_bias(rows, bias)
            self._cell_forward(layer, ws, state, recurrent[layer], whole)
            layer_input = self._layer_output(ws, layer, use_dropout)
        if targets is not None:
            ws.targets.reshape(T, B)[...] = targets.T
        return self._output_rows(ws, slice(0, T * B), layer_input, targets is not None, want_grad, scale)

    @staticmethod
    def _layer_output(ws, layer, use_dropout):
        """A layer's h as the layer above (or the output layer) reads it: masked when training with dropout."""
        if not use_dropout:
            return ws.h_seq[layer]
        np.multiply(ws.h_seq[layer], ws.masks[layer], out=ws.dropped[layer])
        return ws.dropped[layer]

    def _output_rows(self, ws, rows, top, with_targets, want_grad, scale):
        """Logits (and loss, and d loss / d logits) of time-major rows `rows` of the window."""
        cfg, p = self.config, self.params
        logits = ws.logits[rows]
        matmul(logits, top.reshape(-1, cfg.hidden)[rows], p["out.W"])
        add_bias(logits, p["out.b"])
        if not with_targets:
            return 0.0
        return softmax_cross_entropy(ws.dlogits[rows] if want_grad else ws.no_grad, logits, ws.targets[rows], scale)

    @property
    def last_logits(self):
        window = self._last[2]
        if len(window.parts) == 1:
            return window.parts[0].logits
        T = self._last[0].shape[1]
        V = self.config.vocab_size
        pieces = [ws.logits.reshape(T, -1, V) for ws in window.parts]
        return np.concatenate(pieces, axis=1).reshape(-1, V)

    def _input_bias(self, layer):
        """The bias the input projection takes before the cell: b, or zeros for cells that add it later."""
        return self.params[f"layer{layer}.b"] if self.cell.input_bias else self._no_bias

    def _cell_forward(self, layer, ws, state, W_h, units):
        """The recurrent part of one layer's forward; units = (first, count, worker, workers, arrivals)."""
        self.cell.forward(ws, layer, self.params, state, W_h, small_gemm_budget(), units)

    # ---------------------------------------------------------------------------------- backward
    def backward(self, grads, dfinal_state=None):
        """Accumulates (+=) the gradient of the last training forward's mean loss into `grads`.

        Returns the gradient with respect to the initial state, shaped like the state. A gradient
        reaching the final state (dfinal_state) is added, for tests that differentiate through it.
        """
        if self._last is None or not self._last[4]:
            raise CharrnnError("backward needs a preceding forward with train=True and targets")
        inputs, state, window, use_dropout, _, recurrent, use_weight_drop = self._last
        dstate = np.zeros_like(state)
        if use_weight_drop:
            # Backward finds d loss / d(dropped W_h); the chain rule through W_h * mask is a product
            # with the mask, applied once the slices are summed, so set the caller's sums aside.
            names = [f"layer{layer}.W_h" for layer in range(self.config.layers)]
            earlier = {name: grads[name].copy() for name in names}
            for name in names:
                grads[name].fill(0.0)
        if window.split == "batch":
            self._backward_batch(window, grads, inputs, state, dstate, dfinal_state, use_dropout, recurrent)
        else:
            backward_units(self, window, grads, inputs, state, dstate, dfinal_state, use_dropout)
        if use_weight_drop:
            for name, (_, mask) in zip(names, self._dropped_W_h):
                grads[name] *= mask
                grads[name] += earlier[name]
        return dstate

    def _backward_batch(self, window, grads, inputs, state, dstate, dfinal_state, use_dropout, recurrent):
        W_h_T = [W_h.T for W_h in recurrent]  # views: each thread's kernel packs its panels from one
        tasks = []
        for k, (ws, rows) in enumerate(zip(window.parts, window.rows)):
            if k == 0:
                part_grads = grads  # the first slice adds straight into the caller's gradients
            else:
                if ws.grads is None:
                    ws.grads = self.zeros_like_params()
                part_grads = ws.grads
                for grad in part_grads.values():
                    grad.fill(0.0)
            dfinal = None if dfinal_state is None else dfinal_state[:, :, rows]
            tasks.append(
                partial(
                    self._backward_part,
                    ws,
                    part_grads,
                    inputs[rows],
                    state[:, :, rows],
                    dstate[:, :, rows],
                    dfinal,
                    use_dropout,
                    W_h_T,
                )
            )
        run_parts(tasks)
        for ws in window.parts[1:]:
            for name, grad in grads.items():
                grad += ws.grads[name]

    def _backward_part(self, ws, grads, inputs, state, dstate, dfinal_state, use_dropout, W_h_T):
        cfg, p = self.config, self.params
        B, T = inputs.shape
        H, GH = cfg.hidden, cfg.gate_width

        top = ws.dropped[cfg.layers - 1] if use_dropout else ws.h_seq[cfg.layers - 1]
        matmul_accumulate(grads["out.W"], top.reshape(T * B, H).T, ws.dlogits)
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
            self._cell_backward(
                layer,
                ws,
                state,
                dstate[0, layer],
                dstate[1, layer],
                dh_last,
                dc_last,
                W_h_T[layer],
                (0, H, 0, 1, _NO_ARRIVALS),
                grads,
            )

            dgates_x = ws.dgates_x.reshape(T * B, GH)
            dgates_h = ws.dgates_h.reshape(T * B, GH)
            h_seq = ws.h_seq[layer]
            dW_h = grads[f"layer{layer}.W_h"]
            # W_h met h0 at step 0 and h_{t-1} afterwards.
            matmul_accumulate(dW_h, state[0, layer].T, ws.dgates_h[0])
            if T > 1:
                matmul_accumulate(dW_h, h_seq[: T - 1].reshape((T - 1) * B, H).T, dgates_h[B:])
            if self.cell.input_bias:
                bias_backward(grads[f"layer{layer}.b"], dgates_x)
            if layer == 0:
                embedding_backward(grads["layer0.W_x"], ws.dgates_x, inputs)
            else:
                below = ws.dropped[layer - 1] if use_dropout else ws.h_seq[layer - 1]
                matmul_accumulate(grads[f"layer{layer}.W_x"], below.reshape(T * B, H).T, dgates_x)
                matmul(dh_seq.reshape(T * B, H), dgates_x, p[f"layer{layer}.W_x"].T)

    def _cell_backward(self, layer, ws, state, dh0, dc0, dh_last, dc_last, W_h_T, units, grads):
        """The recurrent part of one layer's backward (units as in _cell_forward); the cell's own
        parameters' gradients go to grads."""
        self.cell.backward(
            ws, layer, self.params, grads, state, dh0, dc0, dh_last, dc_last, W_h_T, small_gemm_budget(), units
        )

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
        window = self._last[2]
        ws = window.parts[0]  # one stream is one slice in either split
        L, H, GH = self.config.layers, self.config.hidden, self.config.gate_width
        gates = ws.gates[:, :, 0].transpose(1, 0, 2)
        if window.split == "units":  # back to the natural gate order
            natural = np.empty_like(gates)
            natural[:, :, window.perm] = gates
            gates = natural
        recorded = {
            "h": ws.h_seq[:, :, 0].transpose(1, 0, 2).copy(),
            "c": ws.c_seq[:, :, 0].transpose(1, 0, 2).copy().reshape(T, L, H),
            "gates": gates.copy().reshape(T, L, GH),
            "logits": ws.logits.copy(),
        }
        if self.cell.has_memory:  # what h reads of the memory: tanh(c), or tanh(LN(c)) for the LN-LSTM
            recorded["tanh_c"] = ws.aux_seq[:, :, 0].transpose(1, 0, 2).copy()
        return recorded

    # -------------------------------------------------------------------------------- validation
    def _window(self, batch, steps):
        key = (batch, steps, self.plan)
        if key not in self._windows:
            if len(self._windows) >= 4:  # evaluation's short last window should not pin memory forever
                del self._windows[next(iter(self._windows))]
            self._windows[key] = _Window(self.config, batch, steps, self.dtype, self.plan)
        return self._windows[key]

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
        # int32 (the batch loader's) and int64 go to the kernels as they are; Numba compiles each.
        return np.ascontiguousarray(ids, dtype=ids.dtype if ids.dtype in (np.int32, np.int64) else np.int64)

    def _checked_state(self, state, batch):
        expected = (2, self.config.layers, batch, self.config.hidden)
        if state.shape != expected:
            raise CharrnnError(f"state has shape {state.shape}, expected {expected} (2, layers, batch, hidden)")
        return np.ascontiguousarray(state, dtype=self.dtype)
