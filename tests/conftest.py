"""Shared fixtures: small corpora made on the spot (no corpus text lives in the repository)."""

import os
import signal

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_as_at_a_terminal():
    """Started in the background (nohup, `cmd &` in a script), the suite inherits an ignored SIGINT, and
    so would every charrnn process a test starts and then interrupts: Python leaves an inherited SIG_IGN
    alone. Tests of Ctrl-C need it as at a terminal."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True, scope="session")
def corpus_cache(tmp_path_factory):
    """The corpus cache text files are prepared into (charrnn.corpus_cache): one for the session, never
    the user's ~/.cache; subprocesses (charrnn under mpirun) inherit it."""
    previous = os.environ.get("CHARRNN_CACHE")
    os.environ["CHARRNN_CACHE"] = str(tmp_path_factory.mktemp("charrnn-cache"))
    yield os.environ["CHARRNN_CACHE"]
    if previous is None:
        os.environ.pop("CHARRNN_CACHE", None)
    else:
        os.environ["CHARRNN_CACHE"] = previous


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
