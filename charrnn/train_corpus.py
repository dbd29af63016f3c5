"""What a training run reads: the vocabulary, the train and validation ids, and the corpus record.

The trainer asks only for these, so any source can feed it: `read_training_corpus` opens a prepared
directory or a text file through charrnn.corpus_cache, which maps the ids read-only from disk (a text
file is prepared once into the cache), and the batch loader and the evaluation only slice them; so do
the unigram's counts (charrnn.data.count_symbols), and resident memory does not grow with the corpus.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.corpus_cache import open_corpus
from charrnn.data import Vocab, count_symbols, ids_in_vocab, split_corpus


@dataclass
class TrainingCorpus:
    vocab: Vocab
    train: np.ndarray  # ids of the training split
    val: np.ndarray  # ids of the validation split (may be empty)
    record: dict  # what checkpoints keep as "corpus" (charrnn.saved): path, encoding, sha256, n_chars, fractions

    @property
    def unigram(self):
        """Character frequencies of the training text, rounded: where unprimed samples start."""
        counts = count_symbols(self.train, len(self.vocab))
        return (counts / counts.sum()).round(6).tolist()


def read_training_corpus(config, vocab=None, note=None):
    """config.corpus (a text file or a prepared directory), split by --val-frac and --test-frac. With
    `vocab` (a model's, from --init-from) its ids are in that vocabulary, which may hold symbols this
    text lacks but not fewer (then they are remapped in memory). note(message) hears about slow first
    steps, such as preparing a long file into the cache."""
    corpus = open_corpus(config.corpus, config.encoding, note)
    ids = corpus.ids
    if vocab is None:
        vocab = corpus.vocab
    else:
        ids = ids_in_vocab(corpus, vocab, "the --init-from model")
    record = {
        "path": str(Path(config.corpus).resolve()),
        "encoding": corpus.encoding,
        "sha256": corpus.sha256,
        "n_chars": corpus.n_chars,
        "val_frac": config.val_frac,
        "test_frac": config.test_frac,
    }
    splits = split_corpus(ids, config.val_frac, config.test_frac)
    return TrainingCorpus(vocab, splits["train"], splits["val"], record)
