"""One self-contained HTML page (inline CSS and JS, no network) for browsing cell activations.

The page's markup, style and script are real files in charrnn/page_assets/ (page.html, page.css,
page.js), package data read through importlib.resources; page_html inlines them, with the data,
into the one file written, so it opens from disk with no server. inlined_page does the same for
any page kept there (charrnn serve's serve.html, serve.css, serve.js).

The page shows the text coloured by one cell (at first the most strongly ranked one), a picker
for layer, cell and quantity, the model's top next-character guesses for the character under the
pointer, and the ranking of cells that track features (clicking a row selects that cell).

The address can pick the cell shown first: index.html#layer=1&cell=37&quantity=c (a query string
works too); the address follows later selections, so it can be copied as a link to one cell.

Element ids, for tests that drive the page: #inspect-data (the JSON), #config (header), #layer,
#cell, #prev-cell, #next-cell, #quantity, #autoscale, #legend, #selection, #text (one <span data-i>
per character), #info with #predictions (an <ol> of the top guesses), #ranking (a <table> whose
<tbody> rows carry data-layer, data-cell, data-quantity).

Activations are packed per quantity and layer as {"lo", "hi", "data"}: data is base64 of uint16
little-endian levels, cell-major (cell k's series is levels[k*T:(k+1)*T]), value = lo + level *
(hi - lo) / 65535 — finer than 3 decimals for values within +-30, and a third of the size of JSON
numbers. The page shows at most max_chars characters and max_values embedded values. "captions"
maps each character shown to its visible label (charrnn.data.symbol_caption, as in the plots).

Corpus text never becomes markup: it travels inside a JSON <script> with "<", ">" and "&" escaped,
and the script inserts it with textContent only.
"""

import base64
import json
import math
from importlib import resources

import numpy as np

from charrnn.data import symbol_caption
from charrnn.inspection import QUANTITY_RANGES, write_output
from charrnn.inspection import quantities as quantity_names

DEFAULT_MAX_CHARS = 5000
# Activation values embedded at most (2 bytes each, base64 adds a third): keeps pages near 20 MB.
DEFAULT_MAX_VALUES = 8_000_000
_LEVELS = 65535

# The page's markup, style and script, shipped as package data (pyproject.toml) and read through
# importlib.resources, so they are found in a wheel, a zip or an editable checkout alike.
ASSETS = "page_assets"
PAGE_HTML, PAGE_CSS, PAGE_JS = "page.html", "page.css", "page.js"
_DATA_SLOT = "__INSPECT_DATA__"


def page_char_count(
    text_length, layers, hidden, quantity_count, max_chars=DEFAULT_MAX_CHARS, max_values=DEFAULT_MAX_VALUES
):
    """How many leading characters the page will show within both budgets (at least 1 if any)."""
    per_char = max(1, layers * hidden * quantity_count)
    return max(min(text_length, 1), min(text_length, max_chars, max_values // per_char))


def read_asset(name):
    """The text of one of the page's files (page.html, page.css, page.js) from the installed package."""
    return (resources.files("charrnn") / ASSETS / name).read_text(encoding="utf-8")


def _replace_once(template, slot, content, name=PAGE_HTML):
    if template.count(slot) != 1:
        raise RuntimeError(f"{ASSETS}/{name} must hold {slot!r} exactly once, not {template.count(slot)} times")
    return template.replace(slot, content)


def inlined_page(html_name, css_name, js_name):
    """One of the pages in page_assets/ as one string: its HTML with its CSS in a <style> (in place of
    its <link rel="stylesheet" href=css_name>) and its JS in a <script> (in place of <script src=js_name>)."""
    css, js = read_asset(css_name), read_asset(js_name)
    for text, end in ((css, "</style"), (js, "</script")):
        if end in text.lower():
            raise RuntimeError(f"a page asset contains {end!r}, which would end its inline element early")
    html = read_asset(html_name)
    html = _replace_once(html, f'<link rel="stylesheet" href="{css_name}">', f"<style>\n{css}</style>", html_name)
    return _replace_once(html, f'<script src="{js_name}"></script>', f"<script>\n{js}</script>", html_name)


def page_html(data_json):
    """The whole page as one string: page.html with page.css in a <style>, page.js in a <script> and
    data_json (from script_safe_json) in the data <script>; nothing left to fetch."""
    html = inlined_page(PAGE_HTML, PAGE_CSS, PAGE_JS)
    # The data goes in last, so nothing in it is ever taken for a slot.
    return _replace_once(html, _DATA_SLOT, data_json)


def _quantize(values):
    """(T, H) float -> (lo, hi, base64 of uint16 little-endian, cell-major: cell k is [k*T:(k+1)*T])."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    lo = float(values.min()) if values.size else 0.0
    hi = float(values.max()) if values.size else 0.0
    span = hi - lo if hi > lo else 1.0
    levels = np.rint((values.T - lo) / span * _LEVELS).astype("<u2")
    return {"lo": lo, "hi": lo + span, "data": base64.b64encode(levels.tobytes()).decode("ascii")}


def _clean_json(value):
    """Numpy scalars to Python, non-finite floats to None: JSON.parse rejects NaN."""
    if isinstance(value, dict):
        return {str(key): _clean_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return _clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def script_safe_json(data):
    """JSON that cannot end or confuse the <script> element it sits in."""
    encoded = json.dumps(_clean_json(data), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        encoded = encoded.replace(raw, escaped)
    return encoded


def page_data(
    text,
    activations,
    ranking,
    vocab_symbols,
    meta,
    max_chars=DEFAULT_MAX_CHARS,
    max_values=DEFAULT_MAX_VALUES,
    quantities=None,
):
    """The dict the page embeds (the module docstring says how activations are packed).

    quantities limits the pickable quantities (default: all recorded), leaving room for more text;
    ranking rows about other quantities are dropped.
    """
    available = quantity_names(activations)
    names = available if quantities is None else [name for name in available if name in quantities]
    if not names:
        raise ValueError(f"none of the quantities {quantities} was recorded; available: {available}")
    if len(text) != len(activations["h"]):
        raise ValueError(f"text has {len(text)} characters, activations {len(activations['h'])}")
    _, layers, hidden = activations["h"].shape
    shown = page_char_count(len(text), layers, hidden, len(names), max_chars, max_values)
    blocks = {name: [_quantize(activations[name][:shown, layer, :]) for layer in range(layers)] for name in names}
    vocab = [str(symbol) for symbol in vocab_symbols]
    return {
        "text": text[:shown],
        "total_chars": len(text),
        "vocab": vocab,
        # How the info panel and the guesses show each character: the plots' captions, computed here
        # once rather than again in the page's script.
        "captions": {ch: symbol_caption(ch) for ch in sorted(set(text[:shown]) | set(vocab)) if len(ch) == 1},
        "layers": layers,
        "hidden": hidden,
        "quantities": names,
        "ranges": {name: QUANTITY_RANGES[name] for name in names},
        "blocks": blocks,
        "top_ids": activations["top_ids"][:shown].tolist(),
        "top_probs": np.round(activations["top_probs"][:shown].astype(np.float64), 4).tolist(),
        "ranking": [
            row
            for row in (row._asdict() if hasattr(row, "_asdict") else dict(row) for row in ranking)
            if row["quantity"] in names
        ],
        "meta": meta or {},
    }


def write_index_html(
    path,
    text,
    activations,
    ranking,
    vocab_symbols,
    meta,
    max_chars=DEFAULT_MAX_CHARS,
    max_values=DEFAULT_MAX_VALUES,
    quantities=None,
):
    """Write the inspection page for `text` (its first max_chars characters at most) to path."""
    data = page_data(text, activations, ranking, vocab_symbols, meta, max_chars, max_values, quantities)
    html = page_html(script_safe_json(data))
    write_output(path, lambda stream: stream.write(html.encode("utf-8")))
