// The inspection page's script; charrnn/page.py inlines it into the written page (see page.html).
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

  // Captions of the characters shown (newline as \u21b5, space as \u2423, ...) come from Python's
  // charrnn.data.symbol_caption, which also labels the plots' ticks: one definition, not two.
  const label = (ch) => (Object.prototype.hasOwnProperty.call(data.captions, ch) ? data.captions[ch] : ch);

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
