"""Where a run starts: a resume point and an --init-from model are read once and handed on."""

import numpy as np
import pytest

from charrnn.checkpoint import list_checkpoints
from charrnn.errors import CharrnnError
from charrnn.run_dir import read_resume_point
from charrnn.saved import load_model
from charrnn.train import run_training
from charrnn.train_config import TrainConfig
from charrnn.train_start import start_run, warm_up


def small(corpus, out, **overrides):
    values = dict(
        hidden=8, layers=1, batch_size=4, seq_length=8, eval_every=5, sample_length=10, max_iters=5, plan="batch"
    )
    values.update(overrides)
    return TrainConfig(corpus=str(corpus), out=str(out), **values)


def quiet(*_):
    pass


@pytest.fixture
def trained(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    run_training(small(tiny_corpus, out, max_iters=10), log=quiet)
    return out


def test_a_resume_point_is_all_a_resumed_start_reads(tiny_corpus, trained):
    point = read_resume_point(trained)
    for entry in list_checkpoints(trained):
        entry.path.unlink()  # were the checkpoint read again, there would be nothing to read
    said = []
    start = start_run(small(tiny_corpus, trained, max_iters=20), point, log=said.append)
    assert start.continuing and start.state.iteration == 10 and said[0].startswith(f"resumed from {point.path}")
    for name, value in start.model.params.items():
        np.testing.assert_array_equal(value, point.arrays["param/" + name])
    assert start.model.plan.to_dict() == point.meta["plan"]


def test_an_init_from_model_given_is_not_loaded_again(tiny_corpus, trained, tmp_path):
    base = load_model(trained)
    for entry in list_checkpoints(trained):
        entry.path.unlink()
    start = start_run(small(tiny_corpus, tmp_path / "tuned", init_from=str(trained)), base=base, log=quiet)
    assert not start.continuing and start.state.iteration == 0 and start.corpus.vocab == base[1]
    for name, value in start.model.params.items():
        np.testing.assert_array_equal(value, base[0].params[name])
        assert value is not base[0].params[name]


def test_resuming_into_another_runs_directory_is_refused_before_anything_is_read(tiny_corpus, trained, tmp_path):
    other = tmp_path / "other"
    run_training(small(tiny_corpus, other), log=quiet)
    with pytest.raises(CharrnnError, match="already holds checkpoints"):
        start_run(small(tiny_corpus, other), resume_from=tmp_path / "missing", log=quiet)
    start = start_run(small(tiny_corpus, tmp_path / "fresh", max_iters=20), read_resume_point(trained), log=quiet)
    assert not start.continuing and start.state.iteration == 10 and (tmp_path / "fresh" / "samples").is_dir()


def test_warming_up_leaves_the_model_and_its_state_untouched(tiny_corpus, tmp_path):
    start = start_run(small(tiny_corpus, tmp_path / "run"), log=quiet)
    params = {name: value.copy() for name, value in start.model.params.items()}
    moments, rng = start.state.optimizer.state_arrays(), start.state.rng.bit_generator.state
    warm_up(start.model, start.state.optimizer, start.corpus.vocab, start.corpus.unigram, 4)
    for name, value in params.items():
        np.testing.assert_array_equal(start.model.params[name], value)
    assert start.state.rng.bit_generator.state == rng and start.state.optimizer.t == 0
    for key, value in moments.items():
        np.testing.assert_array_equal(start.state.optimizer.state_arrays()[key], value)
