"""What a training run reads: splits, its corpus record, the unigram, and a base model's vocabulary."""

import hashlib

import numpy as np
import pytest

from charrnn.data import Vocab
from charrnn.errors import CharrnnError
from charrnn.train_config import TrainConfig
from charrnn.train_corpus import read_training_corpus

TEXT = "abcab cabba\n" * 50


def config(path, **overrides):
    return TrainConfig(corpus=str(path), out="run", **overrides)


def test_the_corpus_is_split_and_recorded(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    corpus = read_training_corpus(config(path, val_frac=0.2, test_frac=0.1))
    assert len(corpus.train) + len(corpus.val) < len(TEXT) and len(corpus.val) == pytest.approx(0.2 * len(TEXT), abs=1)
    assert corpus.record == {
        "path": str(path.resolve()),
        "encoding": "utf-8",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "n_chars": len(TEXT),
        "val_frac": 0.2,
        "test_frac": 0.1,
    }
    counts = np.bincount(corpus.train, minlength=len(corpus.vocab))
    assert corpus.unigram == pytest.approx(counts / counts.sum(), abs=1e-6) and len(corpus.unigram) == 5


def test_a_base_models_vocabulary_may_be_wider_but_not_narrower(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    wider = Vocab.from_text(TEXT + "xyz")
    corpus = read_training_corpus(config(path), vocab=wider)
    assert corpus.vocab == wider and corpus.unigram[wider.encode("x")[0]] == 0
    assert wider.decode(corpus.train[:6]) == TEXT[:6]
    with pytest.raises(CharrnnError, match="the --init-from model never saw"):
        read_training_corpus(config(path), vocab=Vocab.from_text("abc\n"))


def test_a_prepared_directory_and_its_text_file_read_the_same(tmp_path):
    from charrnn.data import mapping_of
    from charrnn.prepared import prepare_corpus

    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    directory = prepare_corpus(path, tmp_path / "prepared", progress=False)
    from_file, from_dir = read_training_corpus(config(path)), read_training_corpus(config(directory))
    assert mapping_of(from_dir.train) is not None and mapping_of(from_file.train) is not None  # the cache's
    assert from_dir.vocab == from_file.vocab and np.array_equal(from_dir.train, from_file.train)
    assert np.array_equal(from_dir.val, from_file.val) and from_dir.unigram == from_file.unigram
    assert from_dir.record == {**from_file.record, "path": str(directory.resolve())}
