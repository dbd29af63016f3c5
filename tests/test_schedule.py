"""Learning-rate schedules as pure functions, and fitting a cosine's end to a time budget."""

import math

import pytest

from charrnn.schedule import (
    MEASURE_ITERS,
    MEASURE_SHARE,
    SCHEDULE_MARGIN,
    cosine_lr,
    fit_cosine_end,
    get_lr,
    iterations_to_time,
    step_lr,
)
from charrnn.train_config import TrainConfig


def test_step_decay_starts_at_decay_after_and_matches_a_running_product():
    running, rates = 4e-3, []
    for epoch in range(8):
        if epoch >= 3:  # char-rnn multiplies at the start of each epoch from --lr-decay-after on
            running *= 0.97
        rates.append(running)
    assert [step_lr(epoch, 4e-3, 0.97, 3) for epoch in range(8)] == rates  # the same bits, not just close
    assert step_lr(2, 4e-3, 0.97, 3) == 4e-3
    assert step_lr(5, 4e-3, 0.97, 2.5) == step_lr(5, 4e-3, 0.97, 3)  # a fraction: the first whole epoch past it
    assert step_lr(40, 4e-3, 1.0, 0) == 4e-3


def test_cosine_warms_up_then_falls_and_stays_at_its_end():
    assert [cosine_lr(i, 1.0, 0.1, 3, 13) for i in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    assert cosine_lr(3, 1.0, 0.1, 3, 13) == 1.0
    assert cosine_lr(8, 1.0, 0.1, 3, 13) == pytest.approx(0.55)  # halfway down
    assert cosine_lr(13, 1.0, 0.1, 3, 13) == cosine_lr(99, 1.0, 0.1, 3, 13) == pytest.approx(0.1)
    assert cosine_lr(50, 1.0, 0.1, 3, None) == 1.0  # no end yet: flat at the top past the warm-up


def test_get_lr_picks_the_schedule_and_a_given_length_wins_over_a_measured_end():
    step = TrainConfig(corpus="", out="", lr=1e-2, lr_decay=0.5, lr_decay_after=1)
    assert [get_lr(step, 100, epoch) for epoch in range(3)] == [1e-2, 5e-3, 2.5e-3]
    cosine = TrainConfig(corpus="", out="", lr=1e-2, min_lr=1e-3, lr_schedule="cosine", max_iters=50)
    assert get_lr(cosine, 25, 0, schedule_end=500) == cosine_lr(25, 1e-2, 1e-3, 0, 50)
    budgeted = TrainConfig(corpus="", out="", lr=1e-2, min_lr=1e-3, lr_schedule="cosine", max_minutes=2)
    assert get_lr(budgeted, 25, 0) == 1e-2
    assert get_lr(budgeted, 25, 0, schedule_end=50) == cosine_lr(25, 1e-2, 1e-3, 0, 50)


def test_the_fitted_end_is_what_the_budget_left_holds():
    config = TrainConfig(corpus="", out="", lr_schedule="cosine", max_minutes=1, eval_every=20)
    # 1 s per iteration plus a 2 s evaluation every 20: 1.1 s an iteration, in what 12 s used leave of 60 s.
    per_iteration = 1.0 + 2.0 / 20
    fits = math.floor((60 * (1 - SCHEDULE_MARGIN) - 12) / per_iteration)
    assert fit_cosine_end(config, 25, 12.0, 1.0, 2.0) == (25 + fits, "budget 1 min")
    assert fit_cosine_end(config, 25, 12.0, 1.0, 2.0, iterations_to_max_epochs=fits + 1)[0] == 25 + fits
    config.max_epochs = 2
    assert fit_cosine_end(config, 25, 12.0, 1.0, 2.0, iterations_to_max_epochs=10) == (
        35,
        "--max-epochs 2 comes before the 1 min budget",
    )
    assert fit_cosine_end(config, 25, 75.0, 1.0, 2.0) == (25, "budget 1 min")  # overspent: no iteration left


def test_the_speed_is_timed_over_enough_iterations_and_a_share_of_the_run():
    config = TrainConfig(corpus="", out="", lr_schedule="cosine", max_minutes=10)
    assert iterations_to_time(config, 0.5, 13.0) == math.ceil(MEASURE_SHARE * 600 / 0.5)
    assert iterations_to_time(config, 10.0, 260.0) == MEASURE_ITERS  # 4% of 10 minutes holds fewer
    # --max-epochs ends the run after 13 s + 100 * 0.5 s: 4% of that is under MEASURE_ITERS.
    assert iterations_to_time(config, 0.5, 13.0, iterations_to_max_epochs=100) == MEASURE_ITERS
    assert iterations_to_time(config, 0.01, 13.0, iterations_to_max_epochs=10**6) == math.ceil(
        MEASURE_SHARE * 600 / 0.01
    )
