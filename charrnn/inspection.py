"""What the cells of a trained model do over a text: recording, ranking, saturation, terminal view.

An activations dict maps names to arrays over the T recorded characters:
    "char_ids" (T,) int64                      the input characters
    "h" (T, L, H); cells with a memory (LSTM, LN-LSTM) also "c" and "tanh_c", what h reads of it
                                               (tanh(c); the LN-LSTM's tanh(LN(c))), after each character
    one (T, L, H) array per gate               LSTM, LN-LSTM i f o g, GRU r z n, RNN none
Which a cell type has is its entry's `quantities` in the cell table (charrnn.cells).
    "logits" (T, V); "top_ids", "top_probs" (T, k)   next-character guesses, most likely first
The (T, L, H) arrays are the "quantities" a cell can be inspected by.
"""

import json
import zipfile
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from charrnn.cells import CELLS
from charrnn.checkpoint import write_file
from charrnn.data import terminal_safe
from charrnn.errors import CharrnnError

SIGMOID_GATES = ("i", "f", "o", "r", "z")
QUANTITY_ORDER = ("h", "c", "tanh_c", "i", "f", "o", "g", "r", "z", "n")
# Natural value range of each quantity, for colour scales; None: unbounded (LSTM c).
QUANTITY_RANGES = {
    "h": (-1.0, 1.0),
    "c": None,
    "tanh_c": (-1.0, 1.0),
    "g": (-1.0, 1.0),
    "n": (-1.0, 1.0),
    **{gate: (0.0, 1.0) for gate in SIGMOID_GATES},
}
TOP_K = 5


class RankedCell(NamedTuple):
    feature: str
    layer: int
    cell: int
    quantity: str
    correlation: float


@dataclass(frozen=True)
class GateSaturation:
    """Per gate, the (L, H) fraction of time steps each cell spends below/above the thresholds."""

    left: dict
    right: dict
    left_threshold: float = 0.1
    right_threshold: float = 0.9

    @property
    def gates(self):
        return list(self.left)


def softmax(logits):
    """Softmax over the last axis in float64, shifted by the maximum so exp cannot overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_predictions(logits, k=TOP_K):
    """(ids, probabilities), each (T, min(k, V)), most likely first; ties go to the lower id."""
    probs = softmax(logits)
    k = min(k, probs.shape[-1])
    ids = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return ids.astype(np.int64), np.take_along_axis(probs, ids, axis=-1)


def record_activations(model, char_ids, top_k=TOP_K):
    """Run model.record over char_ids and split its output into named quantities."""
    cell = CELLS.get(model.config.cell)
    if cell is None:
        raise ValueError(f"unknown cell type {model.config.cell!r}")
    char_ids = np.asarray(char_ids, dtype=np.int64)
    recorded = model.record(char_ids)
    h = np.asarray(recorded["h"])
    steps, layers, hidden = h.shape
    if steps != len(char_ids):
        raise ValueError(f"model.record returned {steps} steps for {len(char_ids)} characters")
    activations = {"char_ids": char_ids, "h": h}
    if cell.has_memory:
        activations["c"] = np.asarray(recorded["c"])
        activations["tanh_c"] = np.asarray(recorded["tanh_c"])
    gates = np.asarray(recorded["gates"])
    if gates.shape != (steps, layers, cell.gate_blocks * hidden):
        raise ValueError(f"gates have shape {gates.shape}, expected {(steps, layers, cell.gate_blocks * hidden)}")
    for k, name in enumerate(cell.gate_names):
        if name in cell.quantities:
            activations[name] = np.ascontiguousarray(gates[:, :, k * hidden : (k + 1) * hidden])
    logits = np.asarray(recorded["logits"])
    activations["logits"] = logits
    activations["top_ids"], activations["top_probs"] = top_predictions(logits, top_k)
    return activations


def cell_quantities(cell_type):
    """The quantities record_activations produces for a cell type, known before running a model."""
    return [name for name in QUANTITY_ORDER if name in CELLS[cell_type].quantities]


def quantities(activations):
    """Names of the per-cell (T, L, H) quantities present, in a fixed order."""
    return [name for name in QUANTITY_ORDER if name in activations]


def cell_series(activations, layer, cell, quantity="h"):
    """One cell's value over time, shape (T,)."""
    _check_quantity(activations, quantity)
    return activations[quantity][:, layer, cell]


def _check_quantity(activations, quantity):
    if quantity not in quantities(activations):
        available = ", ".join(quantities(activations))
        raise CharrnnError(f"this model has no quantity {quantity!r}; choose one of: {available}")


def rank_cells(activations, features, quantity="h", top=10, one_per_cell=False):
    """Rows (feature, layer, cell, quantity, correlation), the `top` cells by |Pearson r| per feature.

    quantity is a name or a list of names; cells of all of them compete. one_per_cell keeps only a
    cell's best quantity per feature (h and c of one LSTM cell often both correlate). Constant cells
    score 0; constant features (nothing to correlate with) produce no rows.
    """
    names = [quantity] if isinstance(quantity, str) else list(quantity)
    for name in names:
        _check_quantity(activations, name)
    steps = len(activations["h"])

    # Centred, unit-length features as columns, so one product per block gives all correlations.
    feature_names, columns = [], []
    for feature_name, feature in features.items():
        f = np.asarray(feature, dtype=np.float64)
        if f.shape != (steps,):
            raise ValueError(f"feature {feature_name!r} has shape {f.shape}, activations have {steps} steps")
        f_centered = f - f.mean()
        f_norm = np.linalg.norm(f_centered)
        if _varies(f_norm, f, steps):
            feature_names.append(feature_name)
            columns.append(f_centered / f_norm)
    if not feature_names:
        return []
    unit_features = np.stack(columns, axis=1)

    # One (quantity, layer) block at a time: a float64 copy of everything could take gigabytes.
    correlations, keys = [], []
    for name in names:
        _, layers, hidden = activations[name].shape
        for layer in range(layers):
            x = np.asarray(activations[name][:, layer, :], dtype=np.float64)
            x_centered = x - x.mean(axis=0)
            x_norm = np.linalg.norm(x_centered, axis=0)
            varies = _varies(x_norm, x, steps)
            r = (unit_features.T @ x_centered) / np.where(varies, x_norm, 1.0)
            r[:, ~varies] = 0.0
            correlations.append(np.clip(r, -1.0, 1.0))
            keys.extend((name, layer, cell) for cell in range(hidden))
    correlations = np.concatenate(correlations, axis=1)

    rows = []
    for feature_name, r in zip(feature_names, correlations):
        seen, kept = set(), 0
        for j in np.argsort(-np.abs(r), kind="stable"):
            if kept == top:
                break
            name, layer, cell = keys[j]
            if one_per_cell and (layer, cell) in seen:
                continue
            seen.add((layer, cell))
            rows.append(RankedCell(feature_name, layer, cell, name, float(r[j])))
            kept += 1
    return rows


def _varies(centered_norm, values, steps):
    # Float32 round-off leaves ~1e-7 relative wiggle on a constant signal; that is not a signal.
    scale = np.maximum(1.0, np.abs(values).max(axis=0)) if steps else 1.0
    return centered_norm > 1e-6 * scale * np.sqrt(max(steps, 1))


def strongest_cells(ranking, limit=8):
    """The rows of the `limit` distinct (layer, cell, quantity) with the largest |r|, strongest first."""
    chosen, rows = set(), []
    for row in sorted(ranking, key=lambda row: -abs(row.correlation)):
        key = (row.layer, row.cell, row.quantity)
        if key not in chosen:
            chosen.add(key)
            rows.append(row)
        if len(rows) == limit:
            break
    return rows


def select_cells(activations, ranking, limit=8):
    """The `limit` distinct cells with the largest |r| in ranking: (values (n, T), labels)."""
    rows = strongest_cells(ranking, limit)
    labels = [f"L{row.layer} #{row.cell} {row.quantity} ~ {row.feature} r={row.correlation:+.2f}" for row in rows]
    steps = len(activations["h"])
    values = np.array([cell_series(activations, row.layer, row.cell, row.quantity) for row in rows])
    return values.reshape(len(rows), steps), labels


def busiest_window(features, width, weights=None):
    """Start of the `width`-character stretch in which the given features change most.

    Each feature's changes are normalised to sum 1 over the text (then multiplied by its weight, if
    given), so a feature that changes at every word cannot drown one that changes at every quotation mark.
    """
    features = [np.asarray(f, dtype=np.float64) for f in features]
    weights = np.ones(len(features)) if weights is None else np.asarray(weights, dtype=np.float64)
    steps = len(features[0]) if features else 0
    if steps <= width:
        return 0
    activity = np.zeros(steps)
    for f, weight in zip(features, weights):
        changes = np.abs(np.diff(f, prepend=f[:1]))
        total = changes.sum()
        if total > 0:
            activity += weight * changes / total
    return int(np.argmax(np.convolve(activity, np.ones(width), mode="valid")))


def gate_saturation(activations, left_threshold=0.1, right_threshold=0.9):
    """Fraction of time each sigmoid gate of each cell is left (< 0.1) or right (> 0.9) saturated."""
    left, right = {}, {}
    for gate in SIGMOID_GATES:
        if gate in activations:
            values = np.asarray(activations[gate])
            left[gate] = (values < left_threshold).mean(axis=0)
            right[gate] = (values > right_threshold).mean(axis=0)
    return GateSaturation(left, right, left_threshold, right_threshold)


def write_output(path, write):
    """Write one of the files charrnn makes for people to look at (activations.npz, the page, a plot)
    with charrnn.checkpoint.atomic_write; a file-system error becomes a CharrnnError naming path.

    Not durable (no fsync): these files are derived, made again by re-running, and loss.png is
    rewritten at every evaluation of a training run.
    """
    write_file(path, write, durable=False)


# --- activations.npz -------------------------------------------------------------------------

_RESERVED_KEYS = ("text_codepoints", "vocab_json", "meta_json")


def _json_blob(value):
    encoded = json.dumps(value, ensure_ascii=True, default=_json_default).encode("ascii")
    return np.frombuffer(encoded, dtype=np.uint8)


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def save_activations_npz(path, activations, text, vocab_symbols, meta=None):
    """Write activations plus the text (uint32 code points), vocabulary and meta (JSON as uint8 bytes)."""
    if len(text) != len(activations["char_ids"]):
        raise ValueError(f"text has {len(text)} characters, activations {len(activations['char_ids'])}")
    clash = [key for key in _RESERVED_KEYS if key in activations]
    if clash:
        raise ValueError(f"activation names {clash} are reserved")
    arrays = {name: np.asarray(value) for name, value in activations.items()}
    arrays["text_codepoints"] = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    arrays["vocab_json"] = _json_blob(list(vocab_symbols))
    arrays["meta_json"] = _json_blob(meta or {})
    write_output(path, lambda stream: np.savez(stream, **arrays))


def load_activations_npz(path):
    """Read a file from save_activations_npz: (activations, text, vocab_symbols, meta)."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
        text = arrays.pop("text_codepoints").astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
        vocab_symbols = json.loads(arrays.pop("vocab_json").tobytes())
        meta = json.loads(arrays.pop("meta_json").tobytes())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CharrnnError(f"cannot read activations from {path}: {error}; re-run charrnn inspect") from None
    return arrays, text, vocab_symbols, meta


# --- terminal view ---------------------------------------------------------------------------

NEGATIVE_RGB = (33, 102, 172)  # blue
NEUTRAL_RGB = (247, 247, 247)  # near white
POSITIVE_RGB = (178, 24, 43)  # red
_RESET = "\x1b[0m"


def diverging_rgb(x):
    """Colour for x in [-1, 1]: blue at -1, white at 0, red at +1 (clipped)."""
    x = min(1.0, max(-1.0, float(x)))
    end = POSITIVE_RGB if x > 0 else NEGATIVE_RGB
    weight = abs(x)
    return tuple(round(n + (e - n) * weight) for n, e in zip(NEUTRAL_RGB, end))


def _background(rgb, palette):
    if palette == "256":
        r, g, b = (round(channel / 255 * 5) for channel in rgb)
        return f"\x1b[48;5;{16 + 36 * r + 6 * g + b}m"
    return "\x1b[48;2;{};{};{}m".format(*rgb)


def _foreground(rgb):
    luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255
    return "\x1b[38;5;16m" if luminance > 0.5 else "\x1b[38;5;231m"


def ansi_cell_view(text, values, color=True, center=0.0, scale=None, palette="truecolor"):
    """The text with each character's background coloured by one cell's value.

    (value - center) / scale maps onto blue (-1) .. white (0) .. red (+1); scale defaults to the
    largest |value - center|. palette: "truecolor" (24-bit) or "256". color=False returns the plain
    text. Either way control characters are made visible and newlines stay newlines.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(text),):
        raise ValueError(f"{values.shape[0] if values.ndim else 0} values for {len(text)} characters")
    if palette not in ("truecolor", "256"):
        raise ValueError(f"palette must be 'truecolor' or '256', not {palette!r}")
    safe = [terminal_safe(ch) for ch in text]
    if not color:
        return "".join(safe)
    deviation = values - center
    if scale is None:
        scale = float(np.abs(deviation).max()) if len(values) else 1.0
    scale = scale if scale > 0 else 1.0
    pieces = []
    for ch, x in zip(safe, deviation / scale):
        if ch == "\n":
            pieces.append(_RESET + "\n")
            continue
        rgb = diverging_rgb(x)
        pieces.append(_background(rgb, palette) + _foreground(rgb) + ch)
    pieces.append(_RESET)
    return "".join(pieces)
