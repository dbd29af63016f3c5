"""`charrnn inspect CHECKPOINT`: which cells follow which features of a text — in the terminal and as a page."""

import os
import re
import shlex
import sys
from pathlib import Path

import click
import numpy as np

from charrnn.cells import CELLS
from charrnn.checkpoint import resolve_checkpoint
from charrnn.data import BYTES, known_text, read_text_file
from charrnn.errors import CharrnnError
from charrnn.features import builtin_features, regex_feature
from charrnn.inspection import (
    QUANTITY_ORDER,
    QUANTITY_RANGES,
    ansi_cell_view,
    busiest_window,
    cell_quantities,
    cell_series,
    gate_saturation,
    quantities,
    rank_cells,
    record_activations,
    save_activations_npz,
    select_cells,
    strongest_cells,
)
from charrnn.page import page_char_count, write_index_html
from charrnn.plots import plot_cell_heatmap, plot_gate_saturation
from charrnn.saved import load_model, load_split_ids

DEFAULT_MAX_CHARS = 3000
PAGE_TOP = 10  # ranked cells per feature on the page (the terminal shows --top)
HEATMAP_CHARS = 120
HEATMAP_CELLS = 8
HEATMAP_MIN_R = 0.3
# Fewer pickable quantities leave room for more text on the page (its size budget is per value).
PAGE_QUANTITY_TIERS = (None, ("h", "c", "tanh_c"), ("h", "c"), ("h",))


def _check_patterns(ctx, param, patterns):
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise click.BadParameter(f"invalid regular expression {pattern!r}: {error}") from None
    return patterns


def _parse_cell(ctx, param, value):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r} is not LAYER:CELL, e.g. 0:17")
    return int(match.group(1)), int(match.group(2))


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--text", "text_arg", metavar="TEXT", help="inspect this text")
@click.option(
    "--text-file",
    type=click.Path(dir_okay=False),
    help="inspect the text of this file [default: the checkpoint's validation split]",
)
@click.option(
    "--max-chars",
    default=DEFAULT_MAX_CHARS,
    show_default=True,
    type=click.IntRange(min=1),
    help="use at most this many characters from the start of the text",
)
@click.option("--drop-unknown", is_flag=True, help="remove characters the model never saw instead of failing")
@click.option(
    "--feature",
    "patterns",
    multiple=True,
    metavar="REGEX",
    callback=_check_patterns,
    help="also rank cells against the characters this regex matches; ^ and $ match at line ends "
    "(repeatable; the feature is named regex:REGEX)",
)
@click.option(
    "--top", default=3, show_default=True, type=click.IntRange(min=1), help="cells listed per feature in the terminal"
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="directory for index.html, activations.npz and the plots "
    "[default: RUN_DIR/inspect or ./inspect-<checkpoint name>; with --cell: none]",
)
@click.option(
    "--cell",
    "cell_spec",
    metavar="L:N",
    callback=_parse_cell,
    help="show layer L's cell N in the terminal: each character coloured by its value",
)
@click.option(
    "--quantity",
    type=click.Choice(QUANTITY_ORDER),
    help="with --cell, the value shown [default: h]; without, rank only this value "
    "[default: h and c for cells with a memory (LSTM, LN-LSTM), h otherwise]",
)
@click.option("--color/--no-color", default=None, help="colour the --cell view [default: when stdout is a terminal]")
def inspect(checkpoint, text_arg, text_file, max_chars, drop_unknown, patterns, top, out, cell_spec, quantity, color):
    """Find the cells of CHECKPOINT that follow features of a text.

    CHECKPOINT is a checkpoint file, or a run directory (its best checkpoint). Ranks every cell by how well it correlates with built-in features (inside quotes, bracket depth,
    position in the line, word starts, comments) and any --feature regexes, prints the strongest, and
    writes a self-contained page (index.html) for browsing all cells, with the recorded activations
    and two plots. --cell L:N instead prints the text coloured by one cell, blue (low) to red (high).
    """
    if text_arg is not None and text_file is not None:
        raise click.BadParameter("give --text or --text-file, not both", param_hint="--text")
    model, vocab, meta = load_model(checkpoint)
    config = model.config
    if cell_spec is not None:
        _check_cell(cell_spec, config)
    if quantity is not None:
        _check_quantity_name(quantity, config.cell)

    text, ids, source = _inspected_text(vocab, meta, text_arg, text_file, max_chars, drop_unknown)
    activations = record_activations(model, ids)
    features = builtin_features(text)
    for pattern in patterns:
        features[f"regex:{pattern}"] = regex_feature(text, pattern, re.MULTILINE)

    if cell_spec is not None:
        _show_cell(text, activations, features, cell_spec, quantity or "h", color)
        if out is None:
            return
    ranked = [quantity] if quantity is not None and cell_spec is None else _ranked_quantities(config.cell)
    ranking = _strongest_features_first(
        rank_cells(activations, features, ranked, top=max(top, PAGE_TOP), one_per_cell=True)
    )
    if cell_spec is None:
        how = dict(
            checkpoint=checkpoint,
            text_arg=text_arg,
            text_file=text_file,
            max_chars=max_chars,
            drop_unknown=drop_unknown,
        )
        _print_ranking(ranking, features, top, len(text), ranked, config, how)
    out = Path(out) if out is not None else _default_out(checkpoint)
    page_meta = {
        "checkpoint": str(resolve_checkpoint(checkpoint)),
        "config": config.to_dict(),
        "iteration": meta.get("iteration"),
        "val_loss": meta.get("val_loss"),
        "text": source,
    }
    _write_outputs(out, text, activations, features, ranking, vocab, page_meta)


# --- the text ----------------------------------------------------------------------------------


def _inspected_text(vocab, meta, text_arg, text_file, max_chars, drop_unknown):
    """(display text, ids, description): one display character per symbol id."""
    if text_arg is None and text_file is None:
        try:
            ids = load_split_ids(meta, "val")[:max_chars]
        except CharrnnError as error:
            raise CharrnnError(f"{error} (--text-file FILE or --text TEXT)") from None
        where = (meta.get("corpus") or {}).get("path")
        return _display_text(vocab, ids), np.asarray(ids, dtype=np.int64), f"validation split of {where}"
    if text_arg is not None:
        raw, source = text_arg, "--text"
    else:
        raw, source = read_text_file(text_file, vocab.mode, "the text to inspect"), str(text_file)
    given = bool(raw)
    raw = known_text(vocab, raw, "the text", drop_unknown, lambda note: click.echo(note, err=True))[:max_chars]
    if not raw:
        raise CharrnnError(
            f"the text from {source} is empty{' after dropping unknown symbols' if given else ''}; "
            "give a text with some characters"
        )
    ids = np.asarray(vocab.encode(raw), dtype=np.int64)
    return _display_text(vocab, ids), ids, source


def _display_text(vocab, ids):
    """One character per id. A bytes-mode model's non-ASCII bytes are no characters: they show as U+FFFD."""
    if vocab.mode != BYTES:
        return vocab.decode(ids)
    return "".join(_byte_char(symbol) for symbol in np.asarray(vocab.symbols)[ids])


def _byte_char(value):
    return chr(value) if value < 0x80 else "\ufffd"


def _display_symbols(vocab):
    return [_byte_char(symbol) for symbol in vocab.symbols] if vocab.mode == BYTES else vocab.symbols


# --- options that depend on the model ------------------------------------------------------------


def _check_cell(cell_spec, config):
    layer, cell = cell_spec
    if layer >= config.layers:
        raise click.BadParameter(
            f"layer {layer} does not exist; this model has layers 0..{config.layers - 1}", param_hint="--cell"
        )
    if cell >= config.hidden:
        raise click.BadParameter(
            f"cell {cell} does not exist; each layer has cells 0..{config.hidden - 1}", param_hint="--cell"
        )


def _check_quantity_name(quantity, cell_type):
    available = cell_quantities(cell_type)
    if quantity not in available:
        raise click.BadParameter(
            f"a {cell_type} model has no {quantity!r}; choose one of {', '.join(available)}", param_hint="--quantity"
        )


def _ranked_quantities(cell_type):
    return ["h", "c"] if CELLS[cell_type].has_memory else ["h"]


def _default_out(checkpoint):
    path = Path(checkpoint)
    return path / "inspect" if path.is_dir() else Path(f"inspect-{path.stem}")


# --- terminal output -----------------------------------------------------------------------------


def _show_cell(text, activations, features, cell_spec, quantity, color):
    layer, cell = cell_spec
    values = np.asarray(cell_series(activations, layer, cell, quantity), dtype=np.float64)
    natural = QUANTITY_RANGES[quantity]
    if natural is None:
        center, scale = 0.0, float(np.abs(values).max()) or 1.0
    else:
        center, scale = (natural[0] + natural[1]) / 2, (natural[1] - natural[0]) / 2
    automatic = color is None
    if automatic:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    truecolor = os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit")
    best = _best_feature(values, features)
    click.echo(
        f"layer {layer} cell {cell} {quantity}: min {values.min():+.3f}, max {values.max():+.3f}"
        + (f"; colour blue {center - scale:+.2f} .. white {center:+.2f} .. red {center + scale:+.2f}" if color else "")
        + (f"; best match: {best[0]} (r = {best[1]:+.2f})" if best else "")
    )
    view = ansi_cell_view(
        text, values, color=color, center=center, scale=scale, palette="truecolor" if truecolor else "256"
    )
    click.echo(view, color=color)
    if automatic and not color:
        click.echo("(no colours: stdout is not a terminal or NO_COLOR is set; add --color to force them)", err=True)


def _best_feature(values, features):
    # One cell's series posing as a one-cell model's h, so rank_cells can score it.
    rows = rank_cells({"h": values.reshape(-1, 1, 1)}, features, "h", top=1)
    best = max(rows, key=lambda row: abs(row.correlation), default=None)
    return (best.feature, best.correlation) if best else None


def _strongest_features_first(ranking):
    """The ranking regrouped so the feature with the best-matching cell comes first."""
    by_feature = {}
    for row in ranking:
        by_feature.setdefault(row.feature, []).append(row)
    order = sorted(by_feature, key=lambda name: -max(abs(row.correlation) for row in by_feature[name]))
    return [row for name in order for row in by_feature[name]]


def _print_ranking(ranking, features, top, n_chars, ranked, config, how):
    by_feature = {}
    for row in ranking:
        by_feature.setdefault(row.feature, []).append(row)
    flat = [name for name in features if name not in by_feature]
    order = list(by_feature)
    what = " and ".join(ranked)
    click.echo(
        f"Cells that follow text features: Pearson r of {what} over {n_chars} character(s), "
        f"{config.layers} layer(s) x {config.hidden} cells"
    )
    if not order:
        click.echo("  no feature varies over this text; inspect a longer or more varied text")
        return
    width = max([len(name) for name in order] + [len("feature")])
    click.echo(f"  {'feature':<{width}}  {'layer:cell':>10}  {'quantity':<8}  {'r':>6}   terminal view")
    for name in order:
        for row in by_feature[name][:top]:
            command = _view_command(how, row)
            click.echo(
                f"  {name:<{width}}  {f'{row.layer}:{row.cell}':>10}  {row.quantity:<8}  "
                f"{row.correlation:+6.3f}   {command}"
            )
    if flat:
        click.echo(f"  constant over this text (not ranked): {', '.join(flat)}")


def _view_command(how, row):
    words = ["charrnn", "inspect", how["checkpoint"]]
    if how["text_file"] is not None:
        words += ["--text-file", how["text_file"]]
    elif how["text_arg"] is not None:
        words += ["--text", how["text_arg"]]
    if how["max_chars"] != DEFAULT_MAX_CHARS:
        words += ["--max-chars", str(how["max_chars"])]
    if how["drop_unknown"]:
        words.append("--drop-unknown")
    if row.feature.startswith("regex:"):
        words += ["--feature", row.feature[len("regex:") :]]
    words += ["--cell", f"{row.layer}:{row.cell}", "--quantity", row.quantity]
    return " ".join(shlex.quote(str(word)) for word in words)


# --- files ---------------------------------------------------------------------------------------


def _write_outputs(out, text, activations, features, ranking, vocab, meta):
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CharrnnError(f"cannot create output directory {out} ({error.strerror}); choose another --out") from None
    written = []

    npz = out / "activations.npz"
    save_activations_npz(npz, activations, text, vocab.symbols, {**meta, "ranking": [row._asdict() for row in ranking]})
    written.append((npz, "every recorded value; charrnn.inspection.load_activations_npz reads it"))

    page = out / "index.html"
    page_quantities = _page_quantities(activations, ranking, len(text))
    write_index_html(
        page, text, activations, ranking, _display_symbols(vocab), meta, max_chars=len(text), quantities=page_quantities
    )
    written.append((page, "open it in a browser"))

    gates = gate_saturation(activations)
    if gates.gates:
        path = out / "gate_saturation.png"
        plot_gate_saturation(path, gates)
        written.append((path, "how often each gate is nearly shut or fully open"))
    else:
        click.echo("no gate_saturation.png: a plain RNN has no gates")

    heatmap = _write_heatmap(out / "heatmap.png", text, activations, features, ranking)
    if heatmap:
        written.append(heatmap)

    shown = _page_shown(activations, page_quantities, len(text))
    if shown < len(text):
        click.echo(f"note: the page shows the first {shown} of {len(text)} characters (its size is capped)")
    for path, purpose in written:
        click.echo(f"wrote {path}  ({purpose})")


def _page_shown(activations, names, n_chars):
    _, layers, hidden = activations["h"].shape
    count = len(quantities(activations)) if names is None else len([n for n in quantities(activations) if n in names])
    return page_char_count(n_chars, layers, hidden, count, max_chars=n_chars)


def _page_quantities(activations, ranking, n_chars):
    """The most quantities with which the page still fits the whole text (ranked ones always stay)."""
    ranked = {row.quantity for row in ranking}
    choice = None
    for tier in PAGE_QUANTITY_TIERS:
        choice = None if tier is None else sorted(set(tier) | ranked)
        if _page_shown(activations, choice, n_chars) == n_chars:
            return choice
    return choice


def _write_heatmap(path, text, activations, features, ranking):
    """Heatmap of the best cell of each feature over the stretch where those features change most."""
    best_per_feature = {}
    for row in ranking:
        best_per_feature.setdefault(row.feature, row)
    if not best_per_feature:
        click.echo("no heatmap.png: no cell correlates with a feature that varies over this text")
        return None
    rows = strongest_cells(best_per_feature.values(), limit=HEATMAP_CELLS)
    # Weak matches are not worth a row, but keep the best one so there is a picture at all.
    rows = [row for row in rows if abs(row.correlation) >= HEATMAP_MIN_R] or rows[:1]
    values, labels = select_cells(activations, rows, limit=HEATMAP_CELLS)
    start = busiest_window(
        [features[row.feature] for row in rows], HEATMAP_CHARS, weights=[row.correlation**2 for row in rows]
    )
    stop = start + HEATMAP_CHARS
    values = values[:, start:stop]
    # c is unbounded: scale such rows into [-1, 1] so they share one colour bar with h.
    scaled_labels = []
    for k, label in enumerate(labels):
        peak = float(np.abs(values[k]).max())
        if peak > 1.0:
            values[k] /= peak
            label += f" (/{peak:.3g})"
        scaled_labels.append(label)
    plot_cell_heatmap(path, text[start:stop], values, scaled_labels, vmin=-1.0, vmax=1.0)
    return path, f"the best cell per feature over characters {start}..{min(stop, len(text)) - 1}"
