import base64
import json
import re
from html.parser import HTMLParser
from importlib import resources

import numpy as np
import pytest

from charrnn.data import symbol_caption
from charrnn.inspection import RankedCell
from charrnn.page import ASSETS, PAGE_CSS, PAGE_HTML, PAGE_JS, page_char_count, page_html, read_asset, write_index_html

EVIL = 'x <script>alert(1)</script> & </script><img src=x onerror=alert(2)> \u2028 "q" \U0001f600\n'
DATA_TAG = re.compile(r'<script type="application/json" id="inspect-data">(.*?)</script>', re.S)


def fake_activations(text, layers=2, hidden=3, vocab=5):
    """Hand-made LSTM-shaped activations; h of layer 1 cell 2 ramps from -1 to 1."""
    T = len(text)
    rng = np.random.default_rng(0)
    h = rng.uniform(-1, 1, (T, layers, hidden)).astype(np.float32)
    h[:, 1, 2] = np.linspace(-1, 1, T)
    c = 3 * h
    gates = {name: rng.uniform(0, 1, (T, layers, hidden)).astype(np.float32) for name in "ifo"}
    probs = np.tile(np.array([0.5, 0.2, 0.15, 0.1, 0.05]), (T, 1))
    return {
        "char_ids": np.zeros(T, dtype=np.int64),
        "h": h,
        "c": c,
        "tanh_c": np.tanh(c),
        **gates,
        "g": np.tanh(h),
        "logits": np.zeros((T, vocab)),
        "top_ids": np.tile(np.arange(5), (T, 1)),
        "top_probs": probs,
    }


def read_page(path):
    html = path.read_text(encoding="utf-8")
    embedded = DATA_TAG.findall(html)
    assert len(embedded) == 1
    data = json.loads(embedded[0], parse_constant=lambda token: pytest.fail(f"non-JSON constant {token}"))
    return html, data


def decode(block, T):
    levels = np.frombuffer(base64.b64decode(block["data"]), dtype="<u2").astype(np.float64)
    return (block["lo"] + levels * (block["hi"] - block["lo"]) / 65535).reshape(-1, T)


def write(tmp_path, text, ranking=(), meta=None, **options):
    path = tmp_path / "index.html"
    symbols = ["a", "<", "\n", "&", "\u2028"]
    write_index_html(path, text, fake_activations(text), list(ranking), symbols, meta or {}, **options)
    return path


def test_corpus_text_is_escaped_and_cannot_run(tmp_path):
    html, data = read_page(write(tmp_path, EVIL * 3))
    assert "<script>alert" not in html and "<img" not in html and "\u2028" not in html
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the data and the page's own code
    assert data["text"] == EVIL * 3  # the characters survive, only their encoding changed
    assert data["vocab"] == ["a", "<", "\n", "&", "\u2028"]
    script = html.split("<script>", 1)[1]
    assert "innerHTML" not in script and "textContent" in script


def test_page_is_self_contained_and_has_the_controls(tmp_path):
    ranking = [RankedCell("in_double_quote", 1, 2, "h", 0.93), RankedCell("word_start", 0, 0, "f", -0.4)]
    meta = {"config": {"cell": "lstm", "hidden": 3, "layers": 2, "vocab_size": 5}, "val_loss": float("nan")}
    html, data = read_page(write(tmp_path, "hello world\n" * 10, ranking, meta))
    for element_id in ("layer", "cell", "quantity", "autoscale", "legend", "text", "predictions", "ranking", "config"):
        assert f'id="{element_id}"' in html
    page_code = DATA_TAG.sub("", html)
    assert not re.search(r"\b(src|href)\s*=|https?://|@import|url\(|fetch\(|XMLHttpRequest", page_code)
    assert data["ranking"][0] == {
        "feature": "in_double_quote",
        "layer": 1,
        "cell": 2,
        "quantity": "h",
        "correlation": 0.93,
    }
    assert data["meta"] == {"config": meta["config"], "val_loss": None}  # NaN is not JSON
    assert data["quantities"] == ["h", "c", "tanh_c", "i", "f", "o", "g"]
    assert data["ranges"]["f"] == [0.0, 1.0] and data["ranges"]["c"] is None


def test_embedded_activations_match_the_recording(tmp_path):
    text = "abc\ndef " * 20
    activations = fake_activations(text)
    _, data = read_page(write(tmp_path, text))
    T = len(text)
    for name in data["quantities"]:
        for layer in range(2):
            cells = decode(data["blocks"][name][layer], T)
            assert cells.shape == (3, T)
            span = np.ptp(activations[name][:, layer, :])
            np.testing.assert_allclose(cells.T, activations[name][:, layer, :], atol=span / 65535 + 1e-6)
    assert data["top_ids"][0] == [0, 1, 2, 3, 4] and data["top_probs"][0] == [0.5, 0.2, 0.15, 0.1, 0.05]


def test_long_texts_are_capped(tmp_path):
    text = "x" * 300
    _, data = read_page(write(tmp_path, text, max_chars=100))
    assert len(data["text"]) == 100 and data["total_chars"] == 300 and len(data["top_ids"]) == 100
    assert len(decode(data["blocks"]["h"][0], 100)) == 3
    # 2 layers x 3 cells x 7 quantities = 42 values per character
    assert page_char_count(300, 2, 3, 7, max_chars=5000, max_values=42 * 50) == 50
    assert page_char_count(300, 2, 3, 7, max_values=1) == 1


def test_quantities_can_be_limited_to_fit_more_text(tmp_path):
    ranking = [RankedCell("a", 0, 1, "h", 0.9), RankedCell("b", 0, 2, "f", 0.8)]
    text = "y" * 400
    _, data = read_page(write(tmp_path, text, ranking, max_values=2 * 3 * 7 * 100))
    assert len(data["text"]) == 100
    _, data = read_page(write(tmp_path, text, ranking, max_values=2 * 3 * 7 * 100, quantities=("h", "tanh_c")))
    assert data["quantities"] == ["h", "tanh_c"] and set(data["blocks"]) == {"h", "tanh_c"}
    assert len(data["text"]) == 350 and [row["feature"] for row in data["ranking"]] == ["a"]


def test_page_assets_are_package_resources():
    folder = resources.files("charrnn") / ASSETS
    for name in (PAGE_HTML, PAGE_CSS, PAGE_JS):
        assert (folder / name).is_file(), f"{ASSETS}/{name} is not found through importlib.resources"
        assert read_asset(name).strip()
    html = read_asset(PAGE_HTML)
    assert html.count("__INSPECT_DATA__") == 1 and html.startswith("<!DOCTYPE html>")
    assert "<style" not in html and "<script>" not in html  # the style and the code live in their own files


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each <style> and <script>."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.tags, self.bodies, self._open = [], {"style": [], "script": []}, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in self.bodies:
            self._open = tag
            self.bodies[tag].append("")

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.bodies[self._open][-1] += data


def test_written_page_is_one_file_with_no_external_references(tmp_path):
    html, _ = read_page(write(tmp_path, "see https://example.com/x.css and <link href=//a>\n" * 4))
    page = Elements(html)
    assert not [tag for tag, _ in page.tags if tag == "link"]  # no <link rel=stylesheet href=...>
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "data"):
            assert name not in attrs, f"<{tag} {name}={attrs[name]!r}> refers to another file"
    outside_data = DATA_TAG.sub("", html)  # corpus text may say anything: it is data, never markup
    assert not re.search(r"(src|href)\s*=|https?://|rel\s*=\s*[\"']?stylesheet", outside_data)
    (style,) = page.bodies["style"]
    data_script, code = page.bodies["script"]
    assert style.strip() == read_asset(PAGE_CSS).strip() and code.strip() == read_asset(PAGE_JS).strip()
    for inline in (style, code):
        assert not re.search(r"https?://|@import|url\(|fetch\(|XMLHttpRequest|import\s*\(", inline)
    assert "example.com" in data_script and "<link" not in data_script  # the corpus's "<" is escaped


def test_page_html_puts_the_data_in_its_slot_only():
    html = page_html('{"text":"__INSPECT_DATA__"}')
    assert html.count("__INSPECT_DATA__") == 1 and "<style>" in html and "<script src=" not in html


def test_captions_come_from_symbol_caption(tmp_path):
    text = "a b\tc\n\x1b\u00a0"
    _, data = read_page(write(tmp_path, text))
    assert set(data["captions"]) == set(text) | set(data["vocab"])
    assert all(data["captions"][ch] == symbol_caption(ch) for ch in data["captions"])
    assert data["captions"]["\n"] == "\u21b5" and data["captions"][" "] == "\u2423"
    assert "function label" not in read_asset(PAGE_JS)  # the page looks captions up instead of computing them
