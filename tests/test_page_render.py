"""The inspection page as a browser draws it: headless Chromium runs its script on a real page."""

import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import synthetic_text
from test_cli_inspect import PAREN_CELL, QUOTE_CELL, make_checkpoint

from charrnn.cli import main
from charrnn.features import bracket_depth, quote_feature

EVIL = 'He wrote <script>alert(1)</script> & <img src=x onerror=alert(2)> "ok" (x)\n'
TEXT = EVIL + synthetic_text(1200, seed=2)
RED, WHITE = (178, 24, 43), (247, 247, 247)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=3000",
]
TIMEOUT = 30


def find_chromium():
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip(
        "Chromium is not installed (on Debian/Ubuntu: apt-get install chromium); "
        "the page-rendering test needs a headless browser"
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """index.html written by `charrnn inspect` for TEXT with the planted-cell model."""
    chromium = find_chromium()
    directory = tmp_path_factory.mktemp("render")
    path, _, _, corpus = make_checkpoint(directory, text=TEXT)
    try:
        main(["inspect", str(path), "--text-file", str(corpus), "--out", str(directory / "out")])
    except SystemExit as error:
        pytest.fail(f"charrnn inspect failed with exit code {error.code}")
    return chromium, directory / "out" / "index.html", directory / "profile"


def chromium_run(chromium, profile, url, *extra):
    """Chromium's stdout. It runs in its own process group, so a hung browser goes down whole."""
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = browser.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        pytest.fail(f"Chromium did not finish within {TIMEOUT} s; an alert() dialog would block it like this")
    assert browser.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode("utf-8")


class PageDom(HTMLParser):
    """The character spans of #text (text and background colour) and the text of #selection."""

    def __init__(self, dom):
        super().__init__(convert_charrefs=True)
        self.spans, self.selection, self.tags_in_text = [], "", []
        self._in_text = self._in_span = self._in_selection = False
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "pre" and attrs.get("id") == "text":
            self._in_text = True
        elif self._in_text and tag == "span" and "data-i" in attrs:
            self._in_span = True
            self.spans.append(["", _background(attrs.get("style", ""))])
        elif self._in_text:
            self.tags_in_text.append(tag)
        elif attrs.get("id") == "selection":
            self._in_selection = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_span = self._in_selection = False
        elif tag == "pre":
            self._in_text = False

    def handle_data(self, data):
        if self._in_span:
            self.spans[-1][0] += data
        elif self._in_selection:
            self.selection += data

    @property
    def text(self):
        return "".join(ch for ch, _ in self.spans)

    @property
    def colours(self):
        return np.array([rgb for _, rgb in self.spans], dtype=float)


def _background(style):
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() == "background-color" and value.strip().startswith("rgb("):
            return tuple(int(part) for part in value.strip()[4:-1].split(","))
    return None


def assert_tracks(colours, feature):
    """Red where the feature is on, white where it is off."""
    on = feature > 0
    np.testing.assert_allclose(colours[on].mean(axis=0), RED, atol=12)
    np.testing.assert_allclose(colours[~on].mean(axis=0), WHITE, atol=12)


def planted_feature(cell):
    """What a planted cell of layer 0 follows (as c), over TEXT."""
    depth = bracket_depth(TEXT, "()")
    assert depth.max() == 1  # so every open parenthesis is full red on the cell's colour scale
    return {QUOTE_CELL: quote_feature(TEXT), PAREN_CELL: depth}[cell]


def strongest_ranked(index):
    """(layer, cell, quantity) of the page's strongest ranked row: the cell it shows first."""
    embedded = re.search(
        r'<script type="application/json" id="inspect-data">(.*?)</script>', index.read_text(encoding="utf-8"), re.S
    ).group(1)
    ranking = json.loads(embedded)["ranking"]
    best = max(ranking, key=lambda row: abs(row["correlation"]))  # the first of equals, as the page
    return best["layer"], best["cell"], best["quantity"]


def test_text_renders_as_coloured_characters_and_corpus_markup_stays_text(page):
    chromium, index, profile = page
    dom = PageDom(chromium_run(chromium, profile, index.as_uri(), "--dump-dom"))
    assert dom.text == TEXT  # one span per character, "<script>" and all, as text
    assert all(ch and len(ch) == 1 for ch, _ in dom.spans)
    assert all(rgb is not None for _, rgb in dom.spans)
    assert dom.tags_in_text == []  # no <script> or <img> became an element
    # At first the page shows the strongest ranked cell, one of the two planted ones (both r = 1.00).
    layer, cell, quantity = strongest_ranked(index)
    assert (layer, cell, quantity) in ((0, QUOTE_CELL, "c"), (0, PAREN_CELL, "c"))
    assert dom.selection.startswith(f"layer 0 \u00b7 cell {cell} \u00b7 c \u2014 best match: ")
    assert_tracks(dom.colours, planted_feature(cell))


def test_the_address_selects_the_cell(page):
    chromium, index, profile = page
    _, first, _ = strongest_ranked(index)
    other = PAREN_CELL if first == QUOTE_CELL else QUOTE_CELL
    url = index.as_uri() + f"#layer=0&cell={other}&quantity=c"
    dom = PageDom(chromium_run(chromium, profile, url, "--dump-dom"))
    assert dom.selection.startswith(f"layer 0 \u00b7 cell {other} \u00b7 c")
    assert dom.text == TEXT
    assert_tracks(dom.colours, planted_feature(other))


def test_screenshot_shows_the_page(page, tmp_path):
    chromium, index, profile = page
    shot = tmp_path / "page.png"
    chromium_run(chromium, profile, index.as_uri(), f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.round(matplotlib.image.imread(shot)[..., :3] * 255)
    assert pixels.shape == (900, 1280, 3)
    assert pixels.std() > 10  # not blank
    red = np.all(np.abs(pixels - RED) < 30, axis=-1)
    assert red.sum() > 500  # the quoted stretches of text, coloured by the quote cell
