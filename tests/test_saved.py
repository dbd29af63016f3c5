"""What a checkpoint holds: a damaged model or corpus record is a one-line error naming the file."""

import numpy as np
import pytest

from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.data import Vocab
from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig
from charrnn.plan import Plan
from charrnn.saved import load_model, load_split_ids, model_from_checkpoint, save_model

TEXT = "abc abd abe\nfab cab dab\n" * 20


@pytest.fixture
def saved(tmp_path):
    """(checkpoint path, model, vocab, corpus path) of a tiny model trained with no test split."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    vocab = Vocab.from_text(TEXT)
    model = Model(ModelConfig("lstm", len(vocab), 6, 1), seed=1)
    meta = {
        "corpus": {"path": str(corpus), "encoding": "utf-8", "n_chars": len(TEXT), "val_frac": 0.1, "test_frac": 0.0}
    }
    return save_model(tmp_path / "ckpt.npz", model, vocab, meta), model, vocab, corpus


def rewrite(path, arrays=None, meta=None):
    """A copy of the checkpoint at path with some arrays or metadata replaced, as a damaged file would be."""
    old_arrays, old_meta = load_checkpoint(path)
    old_arrays.update(arrays or {})
    old_meta.update(meta or {})
    target = path.with_name("damaged.npz")
    save_checkpoint(target, old_arrays, old_meta)
    return target


def test_round_trip(saved):
    path, model, vocab, _ = saved
    loaded, loaded_vocab, _ = load_model(path)
    assert loaded_vocab == vocab and loaded.config == model.config
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)


@pytest.mark.parametrize(
    "bad, phrase",
    [
        (np.full((6, 24), "x"), "stored as <U1"),
        (np.zeros((6, 24), bool), "stored as bool"),
        (np.zeros((6, 24), np.complex64), "stored as complex64"),
        (np.full((6, 24), np.nan, np.float32), "NaN or infinite"),
        (np.zeros((3, 5), np.float32), "has shape (3, 5), expected (6, 24)"),
    ],
)
def test_unusable_parameters_are_one_line_errors_naming_the_file(saved, bad, phrase):
    path, _, _, _ = saved
    damaged = rewrite(path, arrays={"param/layer0.W_h": bad})
    with pytest.raises(CharrnnError) as caught:
        load_model(damaged)
    message = str(caught.value)
    assert "\n" not in message and phrase in message
    assert str(damaged) in message and "pick another checkpoint" in message


@pytest.mark.parametrize(
    "meta, phrase",
    [
        ({"vocab": {"mode": "latin-1", "symbols": ["a"]}}, "unknown mode 'latin-1'"),
        ({"vocab": {"mode": "utf-8", "symbols": "abc"}}, "not a list"),
        ({"model": {"cell": "lstm", "vocab_size": 9, "hidden": "six", "layers": 1}}, "malformed"),
    ],
)
def test_malformed_model_records_name_the_file(saved, meta, phrase):
    path, _, _, _ = saved
    damaged = rewrite(path, meta=meta)
    with pytest.raises(CharrnnError, match="pick another checkpoint") as caught:
        load_model(damaged)
    assert phrase in str(caught.value) and str(damaged) in str(caught.value)
    assert "--encoding" not in str(caught.value)  # command-line advice does not fit a stored record


def test_a_checkpoint_without_model_or_vocabulary(saved):
    with pytest.raises(CharrnnError, match="bare.npz has no model configuration"):
        model_from_checkpoint({}, {"iteration": 3}, source="bare.npz")


def test_split_ids_of_the_recorded_corpus(saved):
    path, _, vocab, _ = saved
    _, _, meta = load_model(path)
    val = load_split_ids(meta, "val")
    assert vocab.decode(val) == TEXT[-len(val) :]
    with pytest.raises(CharrnnError, match="test split .* is empty .*; pass a text file instead"):
        load_split_ids(meta, "test")


def test_splits_are_read_from_a_prepared_directory_too(saved, tmp_path):
    from charrnn.prepared import prepare_corpus

    path, _, vocab, corpus = saved
    _, _, meta = load_model(path)
    directory = prepare_corpus(corpus, tmp_path / "prepared", progress=False)
    from_dir = load_split_ids({**meta, "corpus": {**meta["corpus"], "path": str(directory)}}, "val")
    assert np.array_equal(from_dir, load_split_ids(meta, "val")) and vocab.decode(from_dir) == TEXT[-len(from_dir) :]


def test_a_corpus_changed_since_training_is_refused_by_its_checksum(saved):
    path, _, _, corpus = saved
    _, _, meta = load_model(path)
    recorded = {**meta["corpus"], "sha256": "0" * 64}  # same size and symbols, other text
    with pytest.raises(CharrnnError, match="has changed since training"):
        load_split_ids({**meta, "corpus": recorded}, "val")


@pytest.mark.parametrize("corpus", ["a string", {"path": 5}, {"path": None}])
def test_a_missing_or_malformed_corpus_path_is_reported(saved, corpus):
    path, _, _, _ = saved
    _, _, meta = load_model(path)
    with pytest.raises(CharrnnError, match="not available; pass a text file instead"):
        load_split_ids({**meta, "corpus": corpus}, "val")


def test_malformed_split_fractions_are_reported(saved):
    path, _, _, _ = saved
    _, _, meta = load_model(path)
    corpus = {**meta["corpus"], "val_frac": "a tenth"}
    with pytest.raises(CharrnnError, match="corpus record is malformed"):
        load_split_ids({**meta, "corpus": corpus}, "val")


def test_a_saved_model_keeps_its_plan_and_older_ones_get_the_default(tmp_path):
    vocab = Vocab.from_text("abc", "utf-8")
    model = Model(ModelConfig("gru", 3, 4, 1), plan=Plan("units", 2))
    path = tmp_path / "m.npz"
    save_model(path, model, vocab)
    assert load_model(path)[0].plan == Plan("units", 2)
    arrays, meta = load_checkpoint(path)
    del meta["plan"]
    save_checkpoint(tmp_path / "old.npz", arrays, meta)
    assert load_model(tmp_path / "old.npz")[0].plan.split == "batch"
    meta["plan"] = {"split": "sideways", "threads": 2}
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CharrnnError, match="not a usable charrnn checkpoint.*unknown split"):
        load_model(tmp_path / "bad.npz")
