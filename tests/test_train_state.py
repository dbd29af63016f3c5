"""The training state: to checkpoint metadata and arrays and back, through a real file; refusals of a
damaged or foreign checkpoint; rollback snapshots; undoing an iteration that raised."""

import math

import numpy as np
import pytest

from charrnn.checkpoint import load_checkpoint
from charrnn.data import BatchLoader, Vocab
from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig
from charrnn.saved import model_from_checkpoint, save_model
from charrnn.train_config import TrainConfig
from charrnn.train_state import TrainState, check_resumable

VOCAB = Vocab.from_text("abcdefgh")
IDS = np.random.default_rng(0).integers(0, len(VOCAB), 2000).astype(np.uint8)


def config(**overrides):
    return TrainConfig(corpus="c.txt", out="run", batch_size=3, seq_length=8, hidden=6, layers=2, **overrides)


def started(cfg=None):
    cfg = cfg or config()
    model = Model(ModelConfig("lstm", len(VOCAB), cfg.hidden, cfg.layers, 0.2), seed=1)
    return model, TrainState.start(cfg, model, BatchLoader(IDS, cfg.batch_size, cfg.seq_length))


def train_a_little(model, state, iterations):
    """What the loop does to the state, without the loop: batches, dropout draws, updates."""
    grads = model.zeros_like_params()
    for _ in range(iterations):
        inputs, targets, reset = state.loader.next_batch()
        carried = np.zeros_like(state.carried) if reset else state.carried
        _, state.carried = model.loss_and_grads(inputs, targets, carried, grads, state.rng)
        state.optimizer.step(model.params, grads)
        state.iteration += 1


def through_a_file(tmp_path, model, state, val_loss):
    meta, arrays = state.to_checkpoint(val_loss)
    path = save_model(tmp_path / "ckpt.npz", model, VOCAB, meta, arrays)
    arrays, meta = load_checkpoint(path)  # JSON and .npy: what a later process reads
    loaded, _ = model_from_checkpoint(arrays, meta)
    return arrays, meta, loaded


def test_state_to_checkpoint_and_back_continues_identically(tmp_path):
    model, state = started()
    train_a_little(model, state, 5)
    state.history.append({"iter": 5, "epoch": 0.1, "train_loss": 2.0, "val_loss": 2.1, "seconds": 1.0})
    state.lr_scale, state.schedule_end, state.first_loss, state.train_seconds = 0.5, 40, 2.2, 12.5
    assert state.note_val_loss(2.1) and not state.note_val_loss(2.3)
    arrays, meta, loaded = through_a_file(tmp_path, model, state, 2.1)
    back = TrainState.from_checkpoint(arrays, meta, loaded, BatchLoader(IDS, 3, 8), 3, "ckpt.npz")
    for name in ("iteration", "history", "best_val_loss", "train_seconds", "first_loss", "lr_scale", "schedule_end"):
        assert getattr(back, name) == getattr(state, name), name
    assert back.loader.state_dict() == state.loader.state_dict() and back.epoch == state.epoch
    assert back.optimizer.hyper() == state.optimizer.hyper() and back.optimizer.t == 5
    np.testing.assert_array_equal(back.carried, state.carried)
    train_a_little(model, state, 3)  # the same next batches, dropout masks and moments: the same bits
    train_a_little(loaded, back, 3)
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], loaded.params[name], err_msg=name)


def test_the_meta_names_the_schema_keys():
    model, state = started()
    meta, arrays = state.to_checkpoint(None)
    assert meta["val_loss"] is None and meta["best_val_loss"] is None and meta["schedule_end"] is None
    assert "state/train" in arrays and arrays["optim/t"] == 0 and any(k.startswith("optim/m/") for k in arrays)


@pytest.mark.parametrize(
    "damage",
    [
        lambda meta, arrays: meta.pop("optimizer"),
        lambda meta, arrays: meta.update(first_loss="high"),
        lambda meta, arrays: meta.update(rng="pcg"),
        lambda meta, arrays: arrays.pop("state/train"),
    ],
)
def test_a_damaged_or_model_only_checkpoint_cannot_resume(damage):
    model, state = started()
    meta, arrays = state.to_checkpoint(None)
    damage(meta, arrays)
    with pytest.raises(CharrnnError, match="ckpt.npz is a model-only or damaged checkpoint"):
        TrainState.from_checkpoint(arrays, meta, model, BatchLoader(IDS, 3, 8), 3, "ckpt.npz")


def test_carried_state_of_another_batch_size_is_refused():
    model, state = started()
    meta, arrays = state.to_checkpoint(None)
    with pytest.raises(CharrnnError, match="carried state does not fit this batch size"):
        TrainState.from_checkpoint(arrays, meta, model, BatchLoader(IDS, 4, 8), 4, "ckpt.npz")


def test_a_rollback_returns_to_the_snapshot_in_place():
    model, state = started()
    train_a_little(model, state, 2)
    snapshot = state.snapshot(model.params)
    weights = model.params["layer0.W_h"]
    expected = {name: value.copy() for name, value in model.params.items()}
    draws = state.rng.bit_generator.state
    train_a_little(model, state, 3)
    state.roll_back(snapshot, model.params)
    assert state.iteration == 2 and model.params["layer0.W_h"] is weights  # the model's own arrays
    for name, value in expected.items():
        np.testing.assert_array_equal(model.params[name], value)
    assert state.rng.bit_generator.state == draws and state.loader.state_dict() == snapshot.loader
    np.testing.assert_array_equal(state.carried, snapshot.carried)


def test_an_iteration_that_raises_takes_back_its_batch_and_random_draws():
    _, state = started()
    before = state.loader.state_dict(), state.rng.bit_generator.state
    with pytest.raises(KeyboardInterrupt), state.undone_on_error():
        state.loader.next_batch()
        state.rng.random(10)
        raise KeyboardInterrupt
    assert (state.loader.state_dict(), state.rng.bit_generator.state) == before
    with state.undone_on_error():
        state.loader.next_batch()
    assert state.loader.state_dict() != before[0]


def test_a_checkpoint_of_another_run_is_refused():
    cfg = config()
    record = {"sha256": "abc"}
    fits = (VOCAB, ModelConfig("lstm", len(VOCAB), 6, 2))
    check_resumable({"train_config": {"hidden": 6}, "corpus": {"sha256": "abc"}}, cfg, record, fits, fits)
    with pytest.raises(CharrnnError, match="trained with --hidden 16 but this run asks for 6; drop --hidden"):
        check_resumable({"train_config": {"hidden": 16}}, cfg, record, fits, fits)
    with pytest.raises(CharrnnError, match="trained on another corpus \\(old.txt\\)"):
        check_resumable({"corpus": {"sha256": "def", "path": "old.txt"}}, cfg, record, fits, fits)
    other = (VOCAB, ModelConfig("lstm", len(VOCAB), 6, 2, dropout=0.5))
    with pytest.raises(CharrnnError, match="model or vocabulary does not match"):
        check_resumable({}, cfg, record, fits, other)


def test_best_val_loss_starts_unset():
    _, state = started()
    assert math.isinf(state.best_val_loss) and not state.note_val_loss(None)
