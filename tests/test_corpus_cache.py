import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn import corpus_cache
from charrnn.corpora import file_sha256
from charrnn.corpus_cache import cache_root, corpus_defaults, open_corpus
from charrnn.data import load_corpus, mapping_of
from charrnn.errors import CharrnnError
from charrnn.prepared import IDS_FILE, prepare_corpus

TEXT = "Quartermaster:\nThe lanterns swing above the ferry, and nobody counts them. Ünïcödé ✓\n" * 30


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "corpora"


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def entries(cache):
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []


def test_a_text_file_is_prepared_once_and_mapped(cache, source, monkeypatch):
    first = open_corpus(source)
    loaded = load_corpus(source)
    assert first.vocab == loaded.vocab and np.array_equal(first.ids, loaded.ids)
    assert mapping_of(first.ids) is not None and first.path == source and first.sha256 == file_sha256(source)
    (entry,) = entries(cache)
    stamp = (entry / IDS_FILE).stat().st_mtime_ns

    def no_preparing(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(corpus_cache, "prepare_into", no_preparing)
    monkeypatch.setattr(corpus_cache, "file_sha256", no_preparing)  # the fast path reads nothing
    again = open_corpus(source, "utf-8")
    assert np.array_equal(again.ids, first.ids) and (entry / IDS_FILE).stat().st_mtime_ns == stamp


def test_a_touched_file_is_checked_by_sha256_and_reused(cache, source, monkeypatch):
    open_corpus(source)
    os.utime(source, ns=(1, 1))
    monkeypatch.setattr(corpus_cache, "prepare_into", lambda *a, **k: pytest.fail("prepared again"))
    assert np.array_equal(open_corpus(source).ids, load_corpus(source).ids)
    hashed = []
    monkeypatch.setattr(corpus_cache, "file_sha256", lambda path: hashed.append(path))
    open_corpus(source)  # the new time was recorded: fast path again
    assert hashed == []


def test_a_changed_file_is_prepared_again(cache, source):
    open_corpus(source)
    source.write_text(TEXT.replace("counts", "COUNTS"), encoding="utf-8")  # same size, other symbols
    os.utime(source, ns=(5, 5))
    corpus = open_corpus(source)
    assert corpus.vocab == load_corpus(source).vocab and "C" in corpus.vocab.symbols
    assert corpus.sha256 == file_sha256(source) and len(entries(cache)) == 1


def test_encodings_get_their_own_entries(cache, source):
    as_bytes = open_corpus(source, "bytes")
    assert as_bytes.encoding == "bytes" and as_bytes.n_chars == len(TEXT.encode())
    assert open_corpus(source).encoding == "utf-8" and len(entries(cache)) == 2


def test_a_damaged_entry_is_prepared_again(cache, source):
    open_corpus(source)
    (entry,) = entries(cache)
    (entry / IDS_FILE).write_bytes(b"\x00" * 10)
    assert np.array_equal(open_corpus(source).ids, load_corpus(source).ids)


def test_cache_off_reads_into_memory(monkeypatch, source):
    monkeypatch.setenv("CHARRNN_CACHE", "off")
    assert cache_root() is None
    corpus = open_corpus(source)
    assert mapping_of(corpus.ids) is None and corpus.sha256 == file_sha256(source)


def test_an_unwritable_cache_is_noted_and_the_file_read_into_memory(tmp_path, monkeypatch, source):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("CHARRNN_CACHE", str(blocker / "below"))
    notes = []
    corpus = open_corpus(source, note=notes.append)
    assert mapping_of(corpus.ids) is None and np.array_equal(corpus.ids, load_corpus(source).ids)
    assert len(notes) == 1 and "cannot use the corpus cache" in notes[0] and "CHARRNN_CACHE" in notes[0]


def test_default_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("CHARRNN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "charrnn" / "corpora"


def test_unusable_files_keep_their_words(cache, tmp_path):
    with pytest.raises(CharrnnError, match="does not exist"):
        open_corpus(tmp_path / "missing.txt")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00\x01" * 50)
    with pytest.raises(CharrnnError, match="looks like a binary"):
        open_corpus(binary)


def test_prepared_directories_open_with_their_encoding(cache, source, tmp_path):
    directory = prepare_corpus(source, tmp_path / "p", "bytes", val_frac=0.2, progress=False)
    assert corpus_defaults(directory) == {"encoding": "bytes", "val_frac": 0.2, "test_frac": 0.0}
    assert corpus_defaults(source) == {}
    assert open_corpus(directory).encoding == "bytes" and open_corpus(directory, "bytes").path == directory
    with pytest.raises(CharrnnError, match="was prepared as bytes but --encoding utf-8 was asked for"):
        open_corpus(directory, "utf-8")
    assert entries(cache) == []


def test_processes_opening_one_file_at_once_all_get_it_whole(cache, source):
    child = (
        "import sys; from charrnn.corpus_cache import open_corpus; c = open_corpus(sys.argv[1]); "
        "print(c.n_chars, c.sha256)"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", child, str(source)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    answers = {run.communicate()[0] for run in runs}
    assert answers == {f"{len(TEXT)} {file_sha256(source)}\n"} and len(entries(cache)) == 1
