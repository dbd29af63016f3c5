"""What a training run reads: the vocabulary, the train and validation ids, and the corpus record.

The trainer asks only for these, so any source can feed it: today a text file read whole
(`read_training_corpus`); the ids may as well be a np.memmap of a prepared corpus, since the batch
loader and the evaluation only slice them.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.corpora import file_sha256
from charrnn.data import Vocab, ids_in_vocab, load_corpus, split_corpus


@dataclass
class TrainingCorpus:
    vocab: Vocab
    train: np.ndarray  # ids of the training split
    val: np.ndarray  # ids of the validation split (may be empty)
    record: dict  # what checkpoints keep as "corpus" (charrnn.saved): path, encoding, sha256, n_chars, fractions

    @property
    def unigram(self):
        """Character frequencies of the training text, rounded: where unprimed samples start."""
        counts = np.bincount(self.train, minlength=len(self.vocab))
        return (counts / counts.sum()).round(6).tolist()


def read_training_corpus(config, vocab=None):
    """The text file config.corpus, split by --val-frac and --test-frac. With `vocab` (a model's, from
    --init-from) its ids are in that vocabulary, which may hold symbols this text lacks but not fewer."""
    corpus = load_corpus(config.corpus, config.encoding)
    ids = corpus.ids
    if vocab is None:
        vocab = corpus.vocab
    else:
        ids = ids_in_vocab(corpus, vocab, "the --init-from model")
    record = {
        "path": str(Path(config.corpus).resolve()),
        "encoding": corpus.encoding,
        "sha256": file_sha256(config.corpus),
        "n_chars": corpus.n_chars,
        "val_frac": config.val_frac,
        "test_frac": config.test_frac,
    }
    splits = split_corpus(ids, config.val_frac, config.test_frac)
    return TrainingCorpus(vocab, splits["train"], splits["val"], record)
