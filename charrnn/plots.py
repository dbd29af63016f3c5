"""PNG pictures: gate saturation (as in Karpathy et al. 2015), cell heatmaps over text, loss curves.

Figures are built as bare matplotlib Figure objects rendered by the Agg canvas, never through
pyplot: no display is needed and no global backend or pyplot state is touched. Each picture is
written to a temporary file beside its target and renamed, so a failure leaves no half-written PNG.
"""

import math
import warnings

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from charrnn.data import symbol_caption
from charrnn.inspection import write_output

GATE_TITLES = {
    "i": "input gate i",
    "f": "forget gate f",
    "o": "output gate o",
    "r": "reset gate r",
    "z": "update gate z",
}
DPI = 110


def _new_figure(width, height):
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    write_output(path, lambda stream: figure.savefig(stream, format="png", dpi=DPI))


def plot_gate_saturation(path, saturation):
    """One panel per gate; each cell a point (fraction left-, fraction right-saturated), coloured by layer.

    saturation is a charrnn.inspection.GateSaturation.
    """
    gates = saturation.gates
    if not gates:
        raise ValueError("no sigmoid gates to plot (a plain RNN has none)")
    figure = _new_figure(3.3 * len(gates) + 0.6, 3.9)
    axes = figure.subplots(1, len(gates), squeeze=False)[0]
    layers = saturation.left[gates[0]].shape[0]
    for ax, gate in zip(axes, gates):
        ax.plot([0, 1], [1, 0], color="0.8", linewidth=0.8, linestyle="--", zorder=0)
        for layer in range(layers):
            ax.scatter(
                saturation.left[gate][layer],
                saturation.right[gate][layer],
                s=14,
                alpha=0.7,
                color=f"C{layer % 10}",
                edgecolors="none",
                label=f"layer {layer}",
            )
        ax.set_title(GATE_TITLES.get(gate, gate))
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_xlabel(f"fraction left-saturated (< {saturation.left_threshold:g})")
        ax.grid(color="0.93", linewidth=0.6)
    axes[0].set_ylabel(f"fraction right-saturated (> {saturation.right_threshold:g})")
    axes[-1].legend(loc="upper right", fontsize=8, frameon=False)
    figure.tight_layout()
    _save(figure, path)


def plot_cell_heatmap(path, text_segment, values, labels, vmin=None, vmax=None):
    """Heatmap of cells (rows, named by labels) over the characters of text_segment (columns).

    The colour scale is symmetric around 0 (blue negative, red positive) unless vmin/vmax are given.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(labels), len(text_segment)):
        raise ValueError(f"values have shape {values.shape}, expected ({len(labels)}, {len(text_segment)})")
    if values.size == 0:
        raise ValueError("nothing to plot: no cells or no characters")
    extent = float(np.nanmax(np.abs(values))) or 1.0
    vmin = -extent if vmin is None else vmin
    vmax = extent if vmax is None else vmax
    rows, columns = values.shape
    label_width = 0.065 * max(len(label) for label in labels) + 0.5
    figure = _new_figure(label_width + 0.15 * columns + 1.3, 0.34 * rows + 1.2)
    ax = figure.add_subplot()
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(
        range(columns),
        labels=[symbol_caption(ch) for ch in text_segment],
        fontfamily="monospace",
        fontsize=8,
        parse_math=False,
    )
    ax.tick_params(axis="x", length=0, pad=2)
    ax.set_yticks(range(rows), labels=list(labels), fontsize=8, parse_math=False)
    figure.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    with warnings.catch_warnings():
        # Characters the font lacks (control pictures of a bytes model, CJK...) are drawn as boxes;
        # a warning per glyph would bury the command's output.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from", category=UserWarning)
        figure.tight_layout()
        _save(figure, path)


def plot_loss_curve(path, history):
    """Training loss (thin line) and validation loss (markers) in nats/char, with bits/char on the right.

    history: a list of dicts with "iter", "train_loss" and optionally "val_loss".
    """
    train = [
        (entry["iter"], entry["train_loss"])
        for entry in history
        if entry.get("train_loss") is not None and math.isfinite(entry["train_loss"])
    ]
    val = [
        (entry["iter"], entry["val_loss"])
        for entry in history
        if entry.get("val_loss") is not None and math.isfinite(entry["val_loss"])
    ]
    if not train and not val:
        raise ValueError("no finite loss values to plot")
    figure = _new_figure(7.5, 4.2)
    ax = figure.add_subplot()
    if train:
        ax.plot(*zip(*train), linewidth=0.7, color="C0", alpha=0.85, label="train")
    if val:
        ax.plot(*zip(*val), linestyle="none", marker="o", markersize=4.5, color="C3", label="validation")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats/char)")
    bits = ax.secondary_yaxis("right", functions=(lambda nats: nats / math.log(2), lambda b: b * math.log(2)))
    bits.set_ylabel("bits/char = nats / ln 2")
    ax.grid(color="0.92", linewidth=0.6)
    ax.legend(frameon=False)
    figure.tight_layout()
    _save(figure, path)


def plot_tune_curves(path, curves, best=None):
    """Validation loss against minutes of training for every trial of a tune, `best` highlighted.

    curves: a list of dicts with "trial" (its number), "state" ("complete", "pruned", ...) and
    "points", a list of (minutes, val loss); pruned trials end in a cross where they were stopped.
    """
    drawn = [curve for curve in curves if any(math.isfinite(loss) for _, loss in curve["points"])]
    if not drawn:
        raise ValueError("no trial reported a validation loss")
    figure = _new_figure(7.5, 4.6)
    ax = figure.add_subplot()
    lowest = min(loss for curve in drawn for _, loss in curve["points"] if math.isfinite(loss))
    # The first evaluations sit far above the rest (an untrained model): the axis starts at the
    # typical first loss, so the end of every curve, where trials differ, stays readable.
    firsts = sorted(curve["points"][0][1] for curve in drawn if math.isfinite(curve["points"][0][1]))
    top = firsts[len(firsts) // 2] if firsts else lowest + 1
    for curve in drawn:
        minutes, losses = zip(*curve["points"])
        if curve["trial"] == best:
            continue
        ax.plot(minutes, losses, color="0.62", linewidth=0.9, alpha=0.8, zorder=1)
        if curve["state"] == "pruned":
            ax.plot(minutes[-1], losses[-1], marker="x", color="0.45", markersize=5, linestyle="none", zorder=2)
    for curve in drawn:
        if curve["trial"] == best:
            minutes, losses = zip(*curve["points"])
            ax.plot(
                minutes,
                losses,
                color="C3",
                linewidth=2.2,
                marker="o",
                markersize=3.5,
                zorder=3,
                label=f"trial {best} (best): {min(losses):.4f}",
            )
    ax.plot([], [], color="0.62", linewidth=0.9, label="other trials")
    ax.plot([], [], marker="x", color="0.45", linestyle="none", label="pruned")
    ax.set_ylim(lowest - 0.05 * max(top - lowest, 0.1), max(top, lowest + 0.1))
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title(f"{len(drawn)} trials")
    ax.grid(color="0.92", linewidth=0.6)
    ax.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    _save(figure, path)
