"""A trained model in other frameworks' terms: PyTorch's names and layouts (as safetensors) and a
single-step ONNX graph. This is the one place that maps charrnn's parameters to PyTorch's.

PyTorch layout (torch.nn.LSTM/GRU/RNN(input_size=V, hidden_size=H, num_layers=L) plus
torch.nn.Linear(H, V) as the decoder; legend in charrnn.kernels):
    weight_ih_l{l}  (G*H, V or H)  layer{l}.W_x transposed. Layer 0's W_x is a (V, G*H) table that
                                   charrnn reads as a row gather of one-hot characters, which is the
                                   product of a one-hot input of size V with this matrix.
    weight_hh_l{l}  (G*H, H)       layer{l}.W_h transposed
    bias_ih_l{l}    (G*H,)         layer{l}.b
    bias_hh_l{l}    (G*H,)         zero (charrnn has one bias per gate), except GRU's n block, which is
                                   b_hn: PyTorch too adds it inside r * (h W_hn + b_hn)
    decoder.weight  (V, H)         out.W transposed
    decoder.bias    (V,)           out.b
The gate blocks along G*H are in PyTorch's order: charrnn's LSTM is i, f, o, g and PyTorch's i, f, g, o;
GRU (r, z, n) and RNN (one block) are the same in both.

ONNX graph: one step of every stream. Inputs "char", int64 (batch,), one character id per stream,
and each layer's state, float32 (batch, H): h_l0, c_l0, h_l1, c_l1, ... (no c for gru and rnn).
Outputs "logits", float32 (batch, V), unnormalised as in charrnn, then the new states in the same
order, named h_l0_next, c_l0_next, .... Its initializers are charrnn's parameters under their own
names and layouts (layer 0's W_x is gathered by id, as charrnn does).

Both files carry the vocabulary ("vocab": charrnn.data.Vocab.to_dict as JSON) and the model
configuration ("model": ModelConfig.to_dict as JSON) in their metadata. Each cell type's conversion
is its own function in _TORCH_LAYERS and _ONNX_STEPS; a cell in neither is refused in one line.
"""

import json
from pathlib import Path

import numpy as np

from charrnn import __version__
from charrnn.cells import CELLS
from charrnn.checkpoint import write_file
from charrnn.errors import CharrnnError
from charrnn.kernels import GATE_BLOCKS, GATE_NAMES, GRU, LSTM, RNN

FORMATS = ("onnx", "safetensors")
FORMAT_NAMES = {"onnx": "ONNX", "safetensors": "safetensors"}
SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}
# Which packages each format needs (the export extra holds them all).
FORMAT_PACKAGES = {"onnx": "onnx", "safetensors": "safetensors"}
INSTALL_EXTRA = "pip install -e '.[export]'"
# PyTorch's gate blocks, by charrnn's names for them (charrnn.kernels.GATE_NAMES).
TORCH_GATE_NAMES = {LSTM: ("i", "f", "g", "o"), GRU: ("r", "z", "n"), RNN: ("a",)}
DECODER = "decoder."
ONNX_OPSET = 17  # onnxruntime has run opset 17 since 1.12 and onnx has built it since 1.12
ONNX_IR_VERSION = 8  # the IR version of opset 17, so older runtimes read the file
ONNX_SIZE_LIMIT = 2**31 - 2**24  # protobuf's 2 GiB per message, less room for the graph itself


# --------------------------------------------------------------------------------- gate order
def _torch_blocks(cell):
    """charrnn's block index of each of PyTorch's gate blocks, in PyTorch's order."""
    names = GATE_NAMES[cell]
    return [names.index(name) for name in TORCH_GATE_NAMES[cell]]


def torch_gates(cell, array):
    """charrnn's (n, G*H) gate columns as PyTorch's (G*H, n) rows in its block order; a (G*H,) bias
    stays a vector, reordered."""
    blocks = np.split(np.asarray(array), GATE_BLOCKS[cell], axis=-1)
    ordered = np.concatenate([blocks[k] for k in _torch_blocks(cell)], axis=-1)
    return np.ascontiguousarray(ordered.T)


def charrnn_gates(cell, array):
    """Inverse of torch_gates: PyTorch's (G*H, n) rows (or a (G*H,) bias) in charrnn's layout."""
    torch_blocks = np.split(np.asarray(array).T, GATE_BLOCKS[cell], axis=-1)
    blocks = [None] * len(torch_blocks)
    for torch_k, k in enumerate(_torch_blocks(cell)):
        blocks[k] = torch_blocks[torch_k]
    return np.ascontiguousarray(np.concatenate(blocks, axis=-1))


# ------------------------------------------------------------------------------ PyTorch layout
# Each cell's layer: (params, layer) -> PyTorch's four tensors of that layer, and back.
def _gated_layer_to_torch(cell, params, layer):
    p = f"layer{layer}."
    return {
        f"weight_ih_l{layer}": torch_gates(cell, params[p + "W_x"]),
        f"weight_hh_l{layer}": torch_gates(cell, params[p + "W_h"]),
        f"bias_ih_l{layer}": torch_gates(cell, params[p + "b"]),
        f"bias_hh_l{layer}": np.zeros_like(params[p + "b"]),
    }


def _gated_layer_from_torch(cell, tensors, layer):
    """bias_hh is not read: it is zero in what _gated_layer_to_torch writes, and its gradient equals
    bias_ih's, so the same function maps PyTorch's gradients back to charrnn's."""
    return {
        f"layer{layer}.W_x": charrnn_gates(cell, tensors[f"weight_ih_l{layer}"]),
        f"layer{layer}.W_h": charrnn_gates(cell, tensors[f"weight_hh_l{layer}"]),
        f"layer{layer}.b": charrnn_gates(cell, tensors[f"bias_ih_l{layer}"]),
    }


def _lstm_layer_to_torch(params, layer):
    return _gated_layer_to_torch(LSTM, params, layer)


def _lstm_layer_from_torch(tensors, layer):
    return _gated_layer_from_torch(LSTM, tensors, layer)


def _rnn_layer_to_torch(params, layer):
    return _gated_layer_to_torch(RNN, params, layer)


def _rnn_layer_from_torch(tensors, layer):
    return _gated_layer_from_torch(RNN, tensors, layer)


def _gru_n_block(H):
    """Where the candidate's block sits in PyTorch's GRU biases."""
    n = TORCH_GATE_NAMES[GRU].index("n")
    return slice(n * H, (n + 1) * H)


def _gru_layer_to_torch(params, layer):
    tensors = _gated_layer_to_torch(GRU, params, layer)
    b_hn = params[f"layer{layer}.b_hn"]
    tensors[f"bias_hh_l{layer}"][_gru_n_block(b_hn.size)] = b_hn
    return tensors


def _gru_layer_from_torch(tensors, layer):
    params = _gated_layer_from_torch(GRU, tensors, layer)
    H = tensors[f"weight_hh_l{layer}"].shape[1]
    params[f"layer{layer}.b_hn"] = np.array(tensors[f"bias_hh_l{layer}"][_gru_n_block(H)])
    return params


_TORCH_LAYERS = {
    LSTM: (_lstm_layer_to_torch, _lstm_layer_from_torch),
    GRU: (_gru_layer_to_torch, _gru_layer_from_torch),
    RNN: (_rnn_layer_to_torch, _rnn_layer_from_torch),
}


def exportable_cells(fmt):
    """The cell types `fmt` ("onnx" or "safetensors") has a conversion for."""
    if fmt not in FORMATS:
        raise CharrnnError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
    return tuple(_ONNX_STEPS if fmt == "onnx" else _TORCH_LAYERS)


def check_exportable(cell, fmt):
    """Refuses, in one line, a cell type that `fmt` has no conversion for."""
    supported = exportable_cells(fmt)
    if cell not in supported:
        raise CharrnnError(
            f"exporting {cell} models to {FORMAT_NAMES[fmt]} is not supported yet "
            f"(supported: {', '.join(supported)}); charrnn sample and eval run them"
        )


def torch_state_dict(config, params):
    """PyTorch-named tensors of a model (see the module docstring); the parameters' dtype is kept.

    The keys without a dot load into torch.nn.LSTM/GRU/RNN, the "decoder." ones into torch.nn.Linear.
    """
    check_exportable(config.cell, "safetensors")
    to_torch = _TORCH_LAYERS[config.cell][0]
    tensors = {}
    for layer in range(config.layers):
        tensors.update(to_torch(params, layer))
    tensors[DECODER + "weight"] = np.ascontiguousarray(np.asarray(params["out.W"]).T)
    tensors[DECODER + "bias"] = np.ascontiguousarray(params["out.b"])
    return tensors


def params_from_torch(config, tensors):
    """charrnn's parameters (or gradients) from tensors laid out as torch_state_dict writes them."""
    check_exportable(config.cell, "safetensors")
    from_torch = _TORCH_LAYERS[config.cell][1]
    params = {}
    for layer in range(config.layers):
        params.update(from_torch(tensors, layer))
    params["out.W"] = np.ascontiguousarray(np.asarray(tensors[DECODER + "weight"]).T)
    params["out.b"] = np.ascontiguousarray(tensors[DECODER + "bias"])
    return params


# --------------------------------------------------------------------------------------- ONNX
class _Graph:
    """ONNX nodes and initializers under construction, each intermediate value given a fresh name."""

    def __init__(self, helper, numpy_helper, params, hidden):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.params, self.hidden = params, hidden  # what the cells' steps read
        self.nodes, self.initializers = [], []
        self._count = 0
        self._constants = set()

    def constant(self, name, array):
        """An initializer; a name already given is the same constant (the layers share their split sizes)."""
        if name not in self._constants:
            self._constants.add(name)
            self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, *inputs, outputs=1, name=None, **attributes):
        """Adds a node; returns its output name (or a list of `outputs` names)."""
        names = []
        for k in range(outputs):
            self._count += 1
            names.append(name if name is not None and outputs == 1 else f"{op_type.lower()}_{self._count}_{k}")
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def split_gates(self, gates, blocks, hidden):
        """A (batch, blocks*H) value cut into its gate blocks."""
        if blocks == 1:
            return [gates]
        sizes = self.constant(f"split_{blocks}x{hidden}", np.full(blocks, hidden, np.int64))
        return self.op("Split", gates, sizes, outputs=blocks, axis=1)


# Each cell's step: (graph, layer, x-side gate pre-activations, state input names, output names) ->
# nothing; it adds the nodes whose outputs are the new state under `outputs`' names.
def _lstm_step(g, layer, gates_x, state, outputs):
    h, c = state
    W_h = g.constant(f"layer{layer}.W_h", g.params[f"layer{layer}.W_h"])
    gates = g.op("Add", gates_x, g.op("MatMul", h, W_h))
    i, f, o, cand = g.split_gates(gates, 4, g.hidden)  # charrnn's order: i, f, o, g
    i, f, o, cand = g.op("Sigmoid", i), g.op("Sigmoid", f), g.op("Sigmoid", o), g.op("Tanh", cand)
    c_next = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, cand), name=outputs[1])
    g.op("Mul", o, g.op("Tanh", c_next), name=outputs[0])


def _gru_step(g, layer, gates_x, state, outputs):
    (h,) = state
    W_h = g.constant(f"layer{layer}.W_h", g.params[f"layer{layer}.W_h"])
    b_hn = g.constant(f"layer{layer}.b_hn", g.params[f"layer{layer}.b_hn"])
    x_r, x_z, x_n = g.split_gates(gates_x, 3, g.hidden)
    h_r, h_z, h_n = g.split_gates(g.op("MatMul", h, W_h), 3, g.hidden)
    r = g.op("Sigmoid", g.op("Add", x_r, h_r))
    z = g.op("Sigmoid", g.op("Add", x_z, h_z))
    n = g.op("Tanh", g.op("Add", x_n, g.op("Mul", r, g.op("Add", h_n, b_hn))))
    # h' = (1 - z) * n + z * h, written as n + z * (h - n)
    g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n)), name=outputs[0])


def _rnn_step(g, layer, gates_x, state, outputs):
    (h,) = state
    W_h = g.constant(f"layer{layer}.W_h", g.params[f"layer{layer}.W_h"])
    g.op("Tanh", g.op("Add", gates_x, g.op("MatMul", h, W_h)), name=outputs[0])


_ONNX_STEPS = {LSTM: _lstm_step, GRU: _gru_step, RNN: _rnn_step}


def onnx_state_names(config):
    """The graph's state inputs in order: h_l0, c_l0, h_l1, ... (c only for cells with a memory, lstm)."""
    kinds = ("h", "c") if CELLS[config.cell].has_memory else ("h",)
    return [f"{kind}_l{layer}" for layer in range(config.layers) for kind in kinds]


def onnx_model(model, vocab, extra_metadata=None):
    """The single-step onnx.ModelProto of a model (see the module docstring), checked by onnx.checker."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config, params = model.config, model.params
    check_exportable(config.cell, "onnx")
    if sum(p.nbytes for p in params.values()) > ONNX_SIZE_LIMIT:
        raise CharrnnError("the model's weights pass ONNX's 2 GiB limit for one file; export it as safetensors")
    H, V = config.hidden, config.vocab_size
    elem = helper.np_dtype_to_tensor_dtype(model.dtype)
    g = _Graph(helper, numpy_helper, params, H)
    names = onnx_state_names(config)
    per_layer = len(names) // config.layers
    inputs = [helper.make_tensor_value_info("char", TensorProto.INT64, ["batch"])]
    inputs += [helper.make_tensor_value_info(name, elem, ["batch", H]) for name in names]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch", V])]
    outputs += [helper.make_tensor_value_info(name + "_next", elem, ["batch", H]) for name in names]

    step = _ONNX_STEPS[config.cell]
    below = None
    for layer in range(config.layers):
        W_x = g.constant(f"layer{layer}.W_x", params[f"layer{layer}.W_x"])
        b = g.constant(f"layer{layer}.b", params[f"layer{layer}.b"])
        # Layer 0 reads its row of W_x for each character, as charrnn's row gather does.
        projected = g.op("Gather", W_x, "char", axis=0) if layer == 0 else g.op("MatMul", below, W_x)
        gates_x = g.op("Add", projected, b)
        state = names[layer * per_layer : (layer + 1) * per_layer]
        step(g, layer, gates_x, state, [name + "_next" for name in state])
        below = f"h_l{layer}_next"
    out_W, out_b = g.constant("out.W", params["out.W"]), g.constant("out.b", params["out.b"])
    g.op("Add", g.op("MatMul", below, out_W), out_b, name="logits")

    graph = helper.make_graph(g.nodes, f"charrnn_{config.cell}_step", inputs, outputs, g.initializers)
    onnx_file = helper.make_model(
        graph,
        producer_name="charrnn",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        doc_string=(
            f"charrnn {config.cell} {config.layers}x{H}, one step: char (int64, batch) and {', '.join(names)} "
            f"(float32, batch x {H}) in; logits (batch x {V}) and {', '.join(n + '_next' for n in names)} out"
        ),
    )
    onnx_file.ir_version = ONNX_IR_VERSION
    helper.set_model_props(onnx_file, file_metadata(model, vocab, extra_metadata))
    onnx.checker.check_model(onnx_file)
    return onnx_file


# ------------------------------------------------------------------------------------- files
def file_metadata(model, vocab, extra=None):
    """The string-to-string metadata both formats carry: vocabulary and configuration as JSON."""
    metadata = {
        "vocab": json.dumps(vocab.to_dict(), ensure_ascii=False),
        "model": json.dumps(model.config.to_dict()),
        "charrnn_version": __version__,
    }
    metadata.update({key: str(value) for key, value in (extra or {}).items()})
    return metadata


def _onnx_bytes(model, vocab, extra_metadata):
    return onnx_model(model, vocab, extra_metadata).SerializeToString()


def _safetensors_bytes(model, vocab, extra_metadata):
    from safetensors.numpy import save

    metadata = {"format": "pt", **file_metadata(model, vocab, extra_metadata)}  # "pt": PyTorch's layout
    return save(torch_state_dict(model.config, model.params), metadata=metadata)


_WRITERS = {"onnx": _onnx_bytes, "safetensors": _safetensors_bytes}


def require_packages(fmt):
    """The format's package is importable, or a one-line CharrnnError says how to install it."""
    package = FORMAT_PACKAGES[fmt]
    try:
        __import__(package)
    except ImportError:
        raise CharrnnError(
            f"charrnn export --format {fmt} needs the export extra ({package} is not installed): {INSTALL_EXTRA}"
        ) from None


def check_output_path(path):
    """A file name in an existing directory (a typo in --out should not create directories)."""
    path = Path(path)
    if path.is_dir():
        raise CharrnnError(f"--out {path} is a directory; give the name of the file to write")
    if not path.parent.is_dir():
        raise CharrnnError(f"the directory of --out {path} does not exist; create it first or pick another path")
    return path


def export_model(model, vocab, fmt, path, extra_metadata=None):
    """Writes the model as `fmt` ("onnx" or "safetensors") to `path`, atomically; returns the path."""
    check_exportable(model.config.cell, fmt)
    require_packages(fmt)
    path = check_output_path(path)
    data = _WRITERS[fmt](model, vocab, extra_metadata)
    write_file(path, lambda file: file.write(data))
    return path
