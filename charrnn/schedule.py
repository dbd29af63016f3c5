"""Learning-rate schedules as pure functions, and the arithmetic that fits a cosine to a time budget.

    step    char-rnn's: --lr, multiplied by --lr-decay at the start of each epoch from --lr-decay-after on
    cosine  nanoGPT's get_lr: a linear warm-up over --warmup-iters, then half a cosine from --lr down to
            --min-lr at the cosine's end, flat after it

The trainer multiplies either by its lr_scale, which halves at each divergence it rolls back.

A cosine with a time budget (--max-minutes) but no length (--max-iters, --lr-decay-iters) times the
iterations of its session after the first MEASURE_AFTER (those still touch fresh memory and start
threads, so they run slower than the rest), at least MEASURE_ITERS of them and as many as
MEASURE_SHARE of the run holds at their speed (`iterations_to_time`, decided after the first
MEASURE_ITERS, by rank 0 for every rank of an MPI job), and one evaluation, then fixes once where the cosine ends
(`fit_cosine_end`), so it finishes within the budget on a slow machine as on a fast one. That end is
training state, like lr_scale: checkpoints record it and a resumed run uses it.
"""

import math

MEASURE_AFTER = 5
MEASURE_ITERS = 20
# A shared machine's speed drifts by tens of percent over seconds: twenty iterations timed in the
# first second of 3-minute tuning trials, while the other trial was busy, were up to 40% slower than
# the rest of the run, which then stopped 30% before its budget. So the timing spans a share of the
# budget too; the rate stays at --lr meanwhile, where the cosine is flat anyway.
MEASURE_SHARE = 0.04
# Share of the budget the fitted cosine leaves free, as speed drifts on a shared machine. Overrunning
# is mild anyway: the budget then cuts the run where the cosine is within a hair of --min-lr.
SCHEDULE_MARGIN = 0.03


def get_lr(config, iteration, epoch, schedule_end=None):
    """The rate of the update after `iteration` updates, its batch in epoch `epoch` (lr_scale not applied).

    `schedule_end` is where a time-budgeted cosine ends once measured; a given length wins over it.
    """
    if config.lr_schedule == "cosine":
        end = config.lr_decay_iters or config.max_iters or schedule_end
        return cosine_lr(iteration, config.lr, config.min_lr, config.warmup_iters, end)
    return step_lr(epoch, config.lr, config.lr_decay, config.lr_decay_after)


def cosine_lr(iteration, lr, min_lr, warmup_iters, end):
    """Warm-up, then the cosine down to min_lr at `end`. Until the end is known (None) the rate stays
    at lr past the warm-up: the cosine is flat at its start, so the iterations spent measuring barely
    differ from it."""
    if iteration < warmup_iters:
        return lr * (iteration + 1) / (warmup_iters + 1)
    if not end:
        return lr
    progress = min(1.0, (iteration - warmup_iters) / (end - warmup_iters))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def step_lr(epoch, lr, decay, decay_after):
    """lr decayed once for each epoch 1..`epoch` at or past `decay_after` (char-rnn's decay at each
    epoch end). Multiplied out one epoch at a time, so each rate is the bits a running product gives."""
    rate = lr
    for started in range(1, epoch + 1):
        if started >= decay_after:
            rate *= decay
    return rate


def iterations_to_time(config, per_iter, seconds_used, iterations_to_max_epochs=None):
    """How many iterations (after the first MEASURE_AFTER) a time-budgeted cosine times before fixing
    its end, from `per_iter` seconds each over the first MEASURE_ITERS of them: those, or more, as
    many as MEASURE_SHARE of the run holds (the budget, or less where --max-epochs, reached after
    `iterations_to_max_epochs` more, ends the run first)."""
    run_seconds = config.max_minutes * 60
    if iterations_to_max_epochs is not None:
        run_seconds = min(run_seconds, seconds_used + iterations_to_max_epochs * per_iter)
    return max(MEASURE_ITERS, math.ceil(MEASURE_SHARE * run_seconds / max(per_iter, 1e-9)))


def fit_cosine_end(config, iteration, seconds_used, per_iter, per_eval, iterations_to_max_epochs=None):
    """(end, limit): the iteration where a time-budgeted cosine should reach --min-lr, and what set it.

    As many iterations as the budget left (less the margin) holds at `per_iter` seconds each, with an
    evaluation of `per_eval` seconds every --eval-every; or fewer, when --max-epochs (reached after
    `iterations_to_max_epochs` more) comes first, since a cosine the epoch limit cut would stop mid-way.
    The end may be at or before `iteration` or the warm-up's end: the caller decides what that means.
    """
    left = config.max_minutes * 60 * (1 - SCHEDULE_MARGIN) - seconds_used
    fits = int(max(left, 0.0) // max(per_iter + per_eval / config.eval_every, 1e-9))
    end, limit = iteration + fits, f"budget {config.max_minutes:g} min"
    if iterations_to_max_epochs is not None and iteration + iterations_to_max_epochs < end:
        end = iteration + iterations_to_max_epochs
        limit = f"--max-epochs {config.max_epochs:g} comes before the {config.max_minutes:g} min budget"
    return end, limit
