"""One self-contained HTML page (inline CSS and JS, no network) for browsing cell activations.

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
numbers. The page shows at most max_chars characters and max_values embedded values.

Corpus text never becomes markup: it travels inside a JSON <script> with "<", ">" and "&" escaped,
and the script inserts it with textContent only.
"""

import base64
import json
import math

import numpy as np

from charrnn.inspection import QUANTITY_RANGES, write_output
from charrnn.inspection import quantities as quantity_names

DEFAULT_MAX_CHARS = 5000
# Activation values embedded at most (2 bytes each, base64 adds a third): keeps pages near 20 MB.
DEFAULT_MAX_VALUES = 8_000_000
_LEVELS = 65535


def page_char_count(
    text_length, layers, hidden, quantity_count, max_chars=DEFAULT_MAX_CHARS, max_values=DEFAULT_MAX_VALUES
):
    """How many leading characters the page will show within both budgets (at least 1 if any)."""
    per_char = max(1, layers * hidden * quantity_count)
    return max(min(text_length, 1), min(text_length, max_chars, max_values // per_char))


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
    return {
        "text": text[:shown],
        "total_chars": len(text),
        "vocab": [str(symbol) for symbol in vocab_symbols],
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
    html = _TEMPLATE.replace("__INSPECT_DATA__", script_safe_json(data))
    write_output(path, lambda stream: stream.write(html.encode("utf-8")))


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>charrnn inspect</title>
<style>
:root { --ink: #1d232b; --muted: #5f6b7a; --line: #d9dee5; --paper: #ffffff; --wash: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--wash); }
header { padding: 14px 20px 10px; background: var(--paper); border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 0 0 8px; }
#config { display: flex; flex-wrap: wrap; gap: 2px 14px; color: var(--muted); font-size: 13px; }
#config span { min-width: 0; overflow-wrap: anywhere; }
#config b { color: var(--ink); font-weight: 600; }
#controls { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center;
  padding: 8px 20px; background: var(--paper); border-bottom: 1px solid var(--line); }
#controls label { display: inline-flex; gap: 6px; align-items: center; }
#controls select, #controls input[type=number] { font: inherit; padding: 2px 4px; }
#controls input[type=number] { width: 6em; }
#controls button { font: inherit; padding: 1px 8px; cursor: pointer; }
#legend { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
#legend .bar { width: 160px; height: 12px; border: 1px solid var(--line);
  background: linear-gradient(to right, rgb(33,102,172), rgb(247,247,247), rgb(178,24,43)); }
#selection { color: var(--muted); font-size: 13px; }
main { display: grid; grid-template-columns: minmax(0, 1fr) 260px; gap: 16px; padding: 16px 20px; align-items: start; }
@media (max-width: 800px) { main { grid-template-columns: 1fr; } }
#text { margin: 0; padding: 14px 16px; background: var(--paper); border: 1px solid var(--line); border-radius: 4px;
  font: 13px/1.6 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  white-space: pre-wrap; word-break: break-all; overflow-wrap: anywhere; }
#text span { cursor: default; }
#text span.current { outline: 2px solid #111; outline-offset: -1px; }
#info { position: sticky; top: 52px; padding: 12px 14px; background: var(--paper); border: 1px solid var(--line); border-radius: 4px; }
#info .muted { color: var(--muted); font-size: 12px; }
#info-char { font: 600 22px ui-monospace, Menlo, Consolas, monospace; }
#predictions { list-style: none; padding: 0; margin: 8px 0 0; font: 13px ui-monospace, Menlo, Consolas, monospace; }
#predictions li { display: grid; grid-template-columns: 2.2em 1fr 3.6em; gap: 6px; align-items: center; margin: 3px 0; }
#predictions li.actual { font-weight: 700; }
#predictions .pbar { height: 10px; background: rgb(178,24,43); border-radius: 2px; }
#predictions .pct { text-align: right; font-variant-numeric: tabular-nums; }
section { padding: 0 20px 24px; }
table { border-collapse: collapse; background: var(--paper); border: 1px solid var(--line); font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--line); text-align: left; }
td.num { text-align: right; }
tbody tr { cursor: pointer; }
tbody tr:hover { background: #eef3fb; }
tbody tr.selected { background: #dce8f8; }
.empty { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>charrnn inspect</h1>
  <div id="config"></div>
</header>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>cell
    <button id="prev-cell" type="button" title="previous cell">&lsaquo;</button><input id="cell" type="number" min="0"
      value="0"><button id="next-cell" type="button" title="next cell">&rsaquo;</button></label>
  <label>quantity <select id="quantity"></select></label>
  <label><input id="autoscale" type="checkbox"> stretch colours to this cell</label>
  <span id="legend"><span id="legend-lo"></span><span class="bar"></span><span id="legend-hi"></span></span>
  <span id="selection"></span>
</div>
<main>
  <pre id="text"></pre>
  <aside id="info">
    <div class="muted">point at a character</div>
    <div><span id="info-char"></span> <span id="info-where" class="muted"></span></div>
    <div id="info-value" class="muted"></div>
    <div class="muted" style="margin-top:8px">next-character guesses</div>
    <ol id="predictions"></ol>
  </aside>
</main>
<section>
  <h2>Cells that track features</h2>
  <table id="ranking">
    <thead><tr><th>feature</th><th>layer</th><th>cell</th><th>quantity</th><th>correlation</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
<noscript><p style="padding:0 20px">This page needs JavaScript to draw the activations.</p></noscript>
<script type="application/json" id="inspect-data">__INSPECT_DATA__</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("inspect-data").textContent);
  const chars = Array.from(data.text);  // code points, like Python string indexing
  const T = chars.length;
  const NEG = [33, 102, 172], MID = [247, 247, 247], POS = [178, 24, 43];
  const $ = (id) => document.getElementById(id);
  const layerSelect = $("layer"), cellInput = $("cell"), quantitySelect = $("quantity"), autoscale = $("autoscale");

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function label(ch) {
    if (ch === "\n") return "\u21b5";
    if (ch === " ") return "\u2423";
    if (ch === "\t") return "\u21e5";
    const code = ch.codePointAt(0);
    if (code < 32) return String.fromCodePoint(0x2400 + code);
    if (/^\s$/u.test(ch) || (code >= 0x7f && code < 0xa0)) return "U+" + code.toString(16).toUpperCase().padStart(4, "0");
    return ch;
  }

  // Header: model configuration first, then the other scalar facts from meta.
  (function header() {
    const box = $("config");
    const add = (key, value) => {
      const item = el("span");
      item.append(key + " ", el("b", String(value)));
      box.appendChild(item);
    };
    const meta = data.meta || {};
    const config = (meta.config && typeof meta.config === "object") ? meta.config : {};
    for (const [key, value] of Object.entries(config)) add(key, value);
    if (!("layers" in config)) add("layers", data.layers);
    if (!("hidden" in config)) add("hidden", data.hidden);
    for (const [key, value] of Object.entries(meta)) {
      if (key === "config" || value === null || typeof value === "object") continue;
      add(key, typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(4) : value);
    }
    add("characters shown", T < data.total_chars ? T + " of " + data.total_chars : T);
  })();

  // Controls.
  for (let l = 0; l < data.layers; l++) layerSelect.appendChild(new Option(String(l), String(l)));
  for (const q of data.quantities) quantitySelect.appendChild(new Option(q, q));
  cellInput.max = String(data.hidden - 1);

  // Text: one span per character, inserted as text only.
  const textBox = $("text");
  const spans = new Array(T);
  const fragment = document.createDocumentFragment();
  for (let i = 0; i < T; i++) {
    const span = el("span", chars[i]);
    span.dataset.i = String(i);
    spans[i] = span;
    fragment.appendChild(span);
  }
  textBox.appendChild(fragment);

  // Activations: per quantity and layer, uint16 little-endian, cell-major; decoded on first use.
  const decoded = {};
  function block(quantity, layer) {
    const key = quantity + "/" + layer;
    if (!decoded[key]) {
      const packed = data.blocks[quantity][layer];
      const binary = atob(packed.data);
      const bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      const view = new DataView(bytes.buffer);
      const values = new Float32Array(bytes.length / 2);
      const step = (packed.hi - packed.lo) / 65535;
      for (let i = 0; i < values.length; i++) values[i] = packed.lo + step * view.getUint16(2 * i, true);
      decoded[key] = { values: values, lo: packed.lo, hi: packed.hi };
    }
    return decoded[key];
  }

  function signed(x, digits) { return (x >= 0 ? "+" : "") + x.toFixed(digits); }

  function mix(x) {
    x = Math.max(-1, Math.min(1, x)) || 0;
    const end = x > 0 ? POS : NEG, w = Math.abs(x);
    return MID.map((m, k) => Math.round(m + (end[k] - m) * w));
  }

  let series = null, center = 0, half = 1;
  function draw() {
    const layer = Number(layerSelect.value), quantity = quantitySelect.value;
    let cell = Math.round(Number(cellInput.value));
    if (!(cell >= 0)) cell = 0;
    if (cell > data.hidden - 1) cell = data.hidden - 1;
    cellInput.value = String(cell);
    const b = block(quantity, layer);
    series = b.values.subarray(cell * T, (cell + 1) * T);
    // Bounded quantities keep their natural scale unless asked; unbounded ones (c) always fit the
    // cell, since one cell's large c would wash out every other cell of the layer.
    const range = data.ranges[quantity];
    center = range ? (range[0] + range[1]) / 2 : 0;
    half = range ? (range[1] - range[0]) / 2 : 1;
    if (autoscale.checked || !range) {
      let m = 0;
      for (let i = 0; i < T; i++) m = Math.max(m, Math.abs(series[i] - center));
      half = m || 1;
    }
    for (let i = 0; i < T; i++) {
      const rgb = mix((series[i] - center) / half);
      const s = spans[i].style;
      s.backgroundColor = "rgb(" + rgb.join(",") + ")";
      s.color = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) > 128 ? "#111" : "#fff";
    }
    $("legend-lo").textContent = (center - half).toFixed(2);
    $("legend-hi").textContent = (center + half).toFixed(2);
    let note = "layer " + layer + " \u00b7 cell " + cell + " \u00b7 " + quantity;
    let best = null;
    for (const row of data.ranking)
      if (row.layer === layer && row.cell === cell && row.quantity === quantity &&
          (!best || Math.abs(row.correlation) > Math.abs(best.correlation))) best = row;
    if (best) note += " \u2014 best match: " + best.feature + " (r = " + signed(best.correlation, 2) + ")";
    $("selection").textContent = note;
    for (const tr of rankingRows)
      tr.classList.toggle("selected", Number(tr.dataset.layer) === layer && Number(tr.dataset.cell) === cell &&
                                      tr.dataset.quantity === quantity);
    if (current !== null) showInfo(current);
    remember();
  }

  // Pointing at a character: its value and the model's guesses for the character after it.
  let current = null;
  function showInfo(i) {
    if (current !== null && spans[current]) spans[current].classList.remove("current");
    current = i;
    spans[i].classList.add("current");
    $("info-char").textContent = label(chars[i]);
    $("info-where").textContent = "character " + i;
    $("info-value").textContent = quantitySelect.value + " = " + (series ? series[i].toFixed(3) : "");
    const list = $("predictions");
    list.replaceChildren();
    const next = i + 1 < T ? chars[i + 1] : null;
    const ids = data.top_ids[i], probs = data.top_probs[i];
    for (let k = 0; k < ids.length; k++) {
      const symbol = data.vocab[ids[k]];
      const item = el("li", undefined, symbol === next ? "actual" : "");
      const bar = el("div", undefined, "pbar");
      bar.style.width = Math.max(1, Math.round(probs[k] * 100)) + "%";
      const track = el("div");
      track.appendChild(bar);
      item.append(el("span", label(symbol)), track, el("span", (probs[k] * 100).toFixed(1) + "%", "pct"));
      item.title = symbol === next ? "the character that actually came next" : "";
      list.appendChild(item);
    }
  }
  function pointed(event) {
    const target = event.target;
    if (target && target.parentNode === textBox && target.dataset.i !== undefined) showInfo(Number(target.dataset.i));
  }
  textBox.addEventListener("pointerover", pointed);
  textBox.addEventListener("click", pointed);

  // Ranking table: click a row to show that cell.
  const rankingRows = [];
  const tbody = $("ranking").tBodies[0];
  if (!data.ranking.length) {
    const tr = el("tr"), td = el("td", "no cell correlates with a feature that varies over this text", "empty");
    td.colSpan = 5; tr.appendChild(td); tbody.appendChild(tr);
  }
  for (const row of data.ranking) {
    const tr = el("tr");
    tr.dataset.layer = String(row.layer); tr.dataset.cell = String(row.cell); tr.dataset.quantity = row.quantity;
    const r = el("td", signed(row.correlation, 3), "num");
    const rgb = mix(row.correlation);
    r.style.background = "rgb(" + rgb.join(",") + ")";
    r.style.color = Math.abs(row.correlation) > 0.6 ? "#fff" : "#111";
    tr.append(el("td", row.feature), el("td", String(row.layer), "num"), el("td", String(row.cell), "num"),
              el("td", row.quantity), r);
    tr.addEventListener("click", () => {
      layerSelect.value = String(row.layer); cellInput.value = String(row.cell); quantitySelect.value = row.quantity;
      draw();
      window.scrollTo({ top: 0, behavior: "smooth" });
    });
    rankingRows.push(tr);
    tbody.appendChild(tr);
  }

  layerSelect.addEventListener("change", draw);
  quantitySelect.addEventListener("change", draw);
  cellInput.addEventListener("change", draw);
  autoscale.addEventListener("change", draw);
  $("prev-cell").addEventListener("click", () => { cellInput.value = String(Number(cellInput.value) - 1); draw(); });
  $("next-cell").addEventListener("click", () => { cellInput.value = String(Number(cellInput.value) + 1); draw(); });

  // A selection in the address (#layer=1&cell=37&quantity=c) wins over the strongest ranked cell,
  // so a link can point at one cell; the address follows the selection.
  function select(layer, cell, quantity) {
    if (Number.isInteger(layer) && layer >= 0 && layer < data.layers) layerSelect.value = String(layer);
    if (Number.isInteger(cell) && cell >= 0 && cell < data.hidden) cellInput.value = String(cell);
    if (data.quantities.includes(quantity)) quantitySelect.value = quantity;
  }
  function selectFromAddress() {
    const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
    const number = (key) => (params.has(key) && params.get(key) !== "" ? Number(params.get(key)) : NaN);
    select(number("layer"), number("cell"), params.get("quantity"));
  }
  function remember() {
    const hash = "#layer=" + layerSelect.value + "&cell=" + cellInput.value + "&quantity=" + quantitySelect.value;
    if (location.hash !== hash) {
      try { history.replaceState(null, "", hash); } catch (error) { /* some file:// setups refuse; harmless */ }
    }
  }
  let strongest = null;
  for (const row of data.ranking)
    if (!strongest || Math.abs(row.correlation) > Math.abs(strongest.correlation)) strongest = row;
  if (strongest) select(strongest.layer, strongest.cell, strongest.quantity);
  selectFromAddress();
  window.addEventListener("hashchange", () => { selectFromAddress(); if (T > 0) draw(); });
  if (T > 0) { draw(); showInfo(0); }
})();
</script>
</body>
</html>
"""
