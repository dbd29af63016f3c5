"""charrnn train's options: checked once, with the flag named; the default run directory."""

import pytest

from charrnn.errors import CharrnnError
from charrnn.train_config import TrainConfig, default_out_dir


def test_values_from_a_damaged_checkpoint_are_refused_with_the_flag():
    for values, message in (
        ({"hidden": "128"}, "--hidden must be a number"),
        ({"hidden": True}, "--hidden must be a number"),
        ({"max_minutes": float("inf")}, "--max-minutes must be a finite number"),
        ({"lr_decay": 1.5}, "--lr-decay must be in"),
        ({"keep_last": -1}, "--keep-last must not be negative"),
        ({"plan": "diagonal"}, "--plan must be auto"),
    ):
        with pytest.raises(CharrnnError, match=message):
            TrainConfig.from_dict({"corpus": "c.txt", "out": "run", **values}).validate()


def test_from_dict_keeps_known_options_only():
    config = TrainConfig.from_dict({"corpus": "c.txt", "out": "run", "hidden": 32, "retired_option": 1})
    assert config.hidden == 32 and not hasattr(config, "retired_option")
    config.validate()


def test_what_a_cosine_end_comes_from():
    given = TrainConfig(corpus="", out="", lr_schedule="cosine", max_iters=100, lr_decay_iters=80)
    assert given.cosine_end == 80 and not given.fits_cosine_to_budget
    budgeted = TrainConfig(corpus="", out="", lr_schedule="cosine", max_minutes=3)
    assert budgeted.cosine_end == 0 and budgeted.fits_cosine_to_budget


def test_default_run_directory_names_corpus_and_shape():
    assert default_out_dir("data/tinyshakespeare/input.txt", "lstm", 2, 128) == "runs/tinyshakespeare-lstm-2x128"
    assert default_out_dir("books/moby.txt", "gru", 3, 512) == "runs/moby-gru-3x512"
