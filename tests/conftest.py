"""Shared fixtures: small corpora made on the spot (no corpus text lives in the repository)."""

import numpy as np
import pytest


def synthetic_text(n_chars=6000, seed=0):
    """Learnable text: words from a small lexicon, quoted phrases and line breaks."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "echo", "fox", "golf", "hotel", "(india)", "juliet"]
    pieces, length = [], 0
    while length < n_chars:
        line = " ".join(rng.choice(words, size=rng.integers(3, 9)))
        if rng.random() < 0.3:
            line += ' "quoted words here"'
        pieces.append(line + ".\n")
        length += len(pieces[-1])
    return "".join(pieces)[:n_chars]


@pytest.fixture
def tiny_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path
