import warnings

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from charrnn.inspection import GateSaturation
from charrnn.plots import plot_cell_heatmap, plot_gate_saturation, plot_loss_curve, plot_tune_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].var() > 0  # something was drawn
    return pixels


def saturation(gates, layers=3, hidden=20):
    rng = np.random.default_rng(0)
    left = {gate: rng.uniform(0, 0.5, (layers, hidden)) for gate in gates}
    right = {gate: rng.uniform(0, 0.5, (layers, hidden)) for gate in gates}
    return GateSaturation(left, right)


def test_gate_saturation_plot_has_one_panel_per_gate(tmp_path):
    lstm, gru = tmp_path / "lstm.png", tmp_path / "gru.png"
    plot_gate_saturation(lstm, saturation("ifo"))
    plot_gate_saturation(gru, saturation("rz"))
    wide, narrow = assert_real_png(lstm), assert_real_png(gru)
    assert wide.shape[1] > narrow.shape[1]  # three panels side by side against two
    with pytest.raises(ValueError, match="no sigmoid gates"):
        plot_gate_saturation(tmp_path / "rnn.png", GateSaturation({}, {}))
    assert not (tmp_path / "rnn.png").exists()


def test_cell_heatmap_with_characters_as_ticks(tmp_path):
    text = 'if (a) {\n  "$x$" }'
    values = np.sin(np.arange(3 * len(text)).reshape(3, len(text)))
    path = tmp_path / "heatmap.png"
    plot_cell_heatmap(path, text, values, ["L0 #1 h ~ quote", "$cost$ of a", "L1 #0 c"])
    assert_real_png(path)
    with pytest.raises(ValueError, match="shape"):
        plot_cell_heatmap(tmp_path / "bad.png", text, values[:, :-1], ["a", "b", "c"])


def test_heatmap_of_characters_the_font_lacks_warns_nothing(tmp_path):
    # A bytes model's control bytes show as control pictures, which DejaVu Sans Mono has no glyphs for.
    text = "\x00\x13\x1b ab \u4e2d\u6587"
    values = np.linspace(-1, 1, len(text)).reshape(1, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_cell_heatmap(tmp_path / "heatmap.png", text, values, ["L0 #0 h"])
    assert_real_png(tmp_path / "heatmap.png")


def test_loss_curve_with_and_without_validation(tmp_path):
    history = [{"iter": i, "train_loss": 4.2 * np.exp(-i / 40) + 1.3} for i in range(0, 200, 5)]
    history += [{"iter": i, "train_loss": None, "val_loss": 4.2 * np.exp(-i / 40) + 1.4} for i in (0, 100, 199)]
    both, train_only = tmp_path / "loss.png", tmp_path / "train.png"
    plot_loss_curve(both, history)
    plot_loss_curve(train_only, [entry for entry in history if entry["train_loss"] is not None])
    assert_real_png(both)
    assert_real_png(train_only)
    with pytest.raises(ValueError, match="no finite loss"):
        plot_loss_curve(tmp_path / "empty.png", [{"iter": 0, "train_loss": float("nan")}])


def test_failed_render_leaves_no_file(tmp_path, monkeypatch):
    def broken_savefig(self, stream, **options):
        stream.write(PNG_SIGNATURE)
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        plot_loss_curve(tmp_path / "loss.png", [{"iter": 0, "train_loss": 2.0}])
    assert list(tmp_path.iterdir()) == []


def test_tune_curves_highlight_the_best_trial(tmp_path):
    curves = [
        {"trial": 0, "state": "complete", "points": [(0.5, 2.1), (1.0, 1.8), (2.0, 1.6)]},
        {"trial": 1, "state": "pruned", "points": [(0.5, 2.4), (1.0, 2.2)]},
        {"trial": 2, "state": "complete", "points": [(0.5, 2.0), (1.0, 1.7), (2.0, 1.5)]},
    ]
    red = np.array([0xD6, 0x27, 0x28]) / 255  # matplotlib's C3, the best trial's colour

    def red_pixels(path):
        pixels = assert_real_png(path)[..., :3]
        return int((np.abs(pixels - red).max(axis=-1) < 0.08).sum())

    plot_tune_curves(tmp_path / "best.png", curves, best=2)
    plot_tune_curves(tmp_path / "none.png", curves, best=None)
    assert red_pixels(tmp_path / "best.png") > 200
    assert red_pixels(tmp_path / "none.png") == 0
    with pytest.raises(ValueError, match="no trial reported"):
        plot_tune_curves(tmp_path / "empty.png", [{"trial": 0, "state": "fail", "points": []}])
