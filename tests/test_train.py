"""The training loop: run directory contents, exact resume, divergence handling, interruption."""

import json
import os
import signal

import numpy as np
import pytest

from charrnn.checkpoint import list_checkpoints, load_checkpoint
from charrnn.errors import CharrnnError
from charrnn.model import NonFiniteLoss
from charrnn.saved import load_model
from charrnn.schedule import get_lr
from charrnn.train import MAX_ROLLBACKS, Trainer, run_training
from charrnn.train_config import TrainConfig


def cosine_rate(config, iteration, end=None):
    """The rate the trainer uses (charrnn.schedule.get_lr) under a cosine, which needs no epoch."""
    assert config.lr_schedule == "cosine"
    return get_lr(config, iteration, 0.0, end)


def small_config(corpus, out, **overrides):
    values = dict(
        corpus=str(corpus),
        out=str(out),
        hidden=16,
        layers=2,
        batch_size=4,
        seq_length=16,
        print_every=5,
        eval_every=10,
        sample_length=40,
        max_iters=20,
        dropout=0.1,
    )
    values.update(overrides)
    return TrainConfig(**values)


def quiet(*_):
    pass


def test_a_run_writes_checkpoints_metrics_curve_and_samples(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    reason = run_training(small_config(tiny_corpus, out), log=quiet)
    assert "max-iters" in reason
    entries = list_checkpoints(out)
    assert [e.iteration for e in entries] == [10, 20]
    assert all(e.val_loss is not None for e in entries)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if not r.get("eval")] == list(range(1, 21))
    evals = [r for r in records if r.get("eval")]
    assert [r["iter"] for r in evals] == [10, 20]
    assert evals[0]["val_bits_per_char"] == pytest.approx(evals[0]["val_loss"] / np.log(2), rel=1e-4)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sample = (out / "samples" / "iter_000010.txt").read_text()
    assert sample.startswith("iteration 10,") and "val loss" in sample
    model, vocab, meta = load_model(out)
    assert meta["iteration"] in (10, 20)
    assert meta["best_val_loss"] == pytest.approx(min(e.val_loss for e in entries), abs=1e-4)
    assert meta["train_config"]["hidden"] == 16 and len(vocab) == model.config.vocab_size


def test_training_lowers_the_loss_and_repeats_to_the_bit(tiny_corpus, tmp_path):
    def train(out):
        run_training(
            small_config(tiny_corpus, out, max_iters=150, eval_every=150, dropout=0.0, lr=1e-2, hidden=32, layers=1),
            log=quiet,
        )
        return load_checkpoint(out, which="latest")

    arrays_a, meta_a = train(tmp_path / "a")
    arrays_b, _ = train(tmp_path / "b")
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name])
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if not r.get("eval")]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    assert meta_a["history"][-1]["val_loss"] < np.log(meta_a["model"]["vocab_size"])


def assert_resume_is_exact(corpus, tmp_path, total, first, prepare=None, **options):
    """`total` iterations straight, and `first` then a resume to `total`, end with equal checkpoints;
    returns the straight run's directory, checkpoint arrays and metadata.

    `prepare(trainer, part)`, if given, sets up each trainer before it runs (part is "straight",
    "first" or "resumed"); with `total` and `first` 0 (no --max-iters) it must stop the first part.
    """
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out, part, max_iters, resume_from in (
        (straight, "straight", total, None),
        (split, "first", first, None),
        (split, "resumed", total, split),
    ):
        trainer = Trainer(small_config(corpus, out, max_iters=max_iters, **options), resume_from=resume_from, log=quiet)
        if prepare:
            prepare(trainer, part)
        trainer.run()
    arrays_a, meta_a = load_checkpoint(straight, which="latest")
    arrays_b, _ = load_checkpoint(split, which="latest")
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    return straight, arrays_a, meta_a


def test_resume_continues_bit_identically(tiny_corpus, tmp_path):
    straight = tmp_path / "straight"
    run_training(small_config(tiny_corpus, straight, max_iters=30), log=quiet)
    split = tmp_path / "split"
    run_training(small_config(tiny_corpus, split, max_iters=15), log=quiet)
    trainer = Trainer(small_config(tiny_corpus, split, max_iters=30), resume_from=split, log=quiet)
    assert trainer.state.iteration == 15
    trainer.run()
    arrays_a, meta_a = load_checkpoint(straight, which="latest")
    arrays_b, meta_b = load_checkpoint(split, which="latest")
    assert meta_a["iteration"] == meta_b["iteration"] == 30
    assert meta_a["loader"] == meta_b["loader"] and meta_a["rng"] == meta_b["rng"]
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


def test_progress_lines_show_the_time_left(tiny_corpus, tmp_path):
    lines = []
    run_training(small_config(tiny_corpus, tmp_path / "run", max_iters=10, max_epochs=0), log=lines.append)
    progress = [line for line in lines if line.startswith("iter ")]
    assert progress and all(" | eta 0m" in line for line in progress)
    assert progress[-1].endswith("eta 0m00s")  # iteration 10 of 10


def test_cosine_schedule_warms_up_then_falls_to_min_lr():
    config = TrainConfig(corpus="", out="", lr=1e-2, min_lr=1e-3, lr_schedule="cosine", warmup_iters=4, max_iters=104)
    config.validate()
    assert [cosine_rate(config, i) for i in range(4)] == pytest.approx([2e-3, 4e-3, 6e-3, 8e-3])
    assert cosine_rate(config, 4) == pytest.approx(1e-2)
    assert cosine_rate(config, 54) == pytest.approx(5.5e-3)  # halfway down the cosine
    assert cosine_rate(config, 104) == cosine_rate(config, 500) == pytest.approx(1e-3)
    rates = [cosine_rate(config, i) for i in range(4, 105)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert cosine_rate(config, 54, end=300) == cosine_rate(config, 54)  # a given length wins over a measured end


def test_a_time_budgeted_cosine_takes_its_end_as_an_argument():
    budgeted = TrainConfig(corpus="", out="", lr=1e-2, min_lr=1e-3, lr_schedule="cosine", warmup_iters=4, max_minutes=5)
    budgeted.validate()
    explicit = TrainConfig(corpus="", out="", lr=1e-2, min_lr=1e-3, lr_schedule="cosine", warmup_iters=4, max_iters=104)
    assert [cosine_rate(budgeted, i, end=104) for i in range(120)] == [cosine_rate(explicit, i) for i in range(120)]
    # Before its end is measured the rate holds at --lr after the warm-up, where the cosine starts.
    assert cosine_rate(budgeted, 2) == cosine_rate(explicit, 2) and cosine_rate(budgeted, 30) == 1e-2


def test_cosine_run_logs_its_rates_and_resumes_bit_identically(tiny_corpus, tmp_path):
    schedule = dict(lr_schedule="cosine", lr=5e-3, min_lr=5e-4, warmup_iters=3, lr_decay_iters=24)
    straight, _, _ = assert_resume_is_exact(tiny_corpus, tmp_path, 24, 11, **schedule)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in records if not r.get("eval")]
    config = small_config(tiny_corpus, straight, max_iters=24, **schedule)
    assert logged == pytest.approx([cosine_rate(config, i) for i in range(24)])


class FakeClock:
    """Time that passes only inside the model: `step` seconds per training window and `window`
    per evaluated window, so a run's measured speed is exact whatever the machine."""

    def __init__(self, step=0.5, window=0.1):
        self.now, self.step, self.window = 0.0, step, window

    def __call__(self):
        return self.now

    def drive(self, trainer):
        train, evaluate = trainer.model.loss_and_grads, trainer.model.loss

        def timed_train(*args, **kwargs):
            self.now += self.step
            return train(*args, **kwargs)

        def timed_evaluate(*args, **kwargs):
            self.now += self.window
            return evaluate(*args, **kwargs)

        trainer.clock = self
        trainer.model.loss_and_grads, trainer.model.loss = timed_train, timed_evaluate


def interrupt_at(trainer, at_call):
    """Ctrl-C during the model's `at_call`-th training window."""
    real = trainer.model.loss_and_grads
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    trainer.model.loss_and_grads = interrupted


BUDGETED = dict(lr_schedule="cosine", lr=5e-3, min_lr=5e-4, warmup_iters=3, max_minutes=1, eval_every=20)


@pytest.mark.parametrize(
    "max_epochs, end, limit",
    [
        # After iteration 25 and the evaluation timed there: 12.5 s of training and two evaluations of 1 s
        # (10 windows of 0.1 s), at 20 and 25. 60 s less the 3% margin leaves 43.7 s; at 0.5 s + 1 s / 20
        # an iteration, that is 79 more.
        (50, 104, "budget 1 min"),
        (1, 84, "--max-epochs 1 comes before the 1 min budget"),  # 84 iterations per epoch
    ],
)
def test_a_time_budgeted_cosine_fixes_its_end_from_the_measured_speed(tiny_corpus, tmp_path, max_epochs, end, limit):
    lines = []
    config = small_config(tiny_corpus, tmp_path / "run", max_iters=0, max_epochs=max_epochs, **BUDGETED)
    trainer = Trainer(config, log=lines.append)
    FakeClock().drive(trainer)
    reason = trainer.run()
    assert [line for line in lines if line.startswith("schedule:")] == [
        f"schedule: cosine fixed to end at iteration {end} (measured 500 ms/iter over iterations 6-25, "
        f"evaluations ~1 s each; {limit})"
    ]
    assert (
        trainer.state.iteration == end
        and reason == f"reached the cosine's end at iteration {end}, fitted to --max-minutes 1"
    )
    assert any(line.startswith(f"iter     30/{end} |") for line in lines)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in records if not r.get("eval")]
    assert logged[:25] == pytest.approx([cosine_rate(config, i) for i in range(25)])  # not yet fixed: --lr
    assert logged[25:] == pytest.approx([cosine_rate(config, i, end=end) for i in range(25, end)])
    assert logged[-1] == pytest.approx(5e-4, rel=1e-2) and cosine_rate(config, end, end=end) == pytest.approx(5e-4)
    assert [r["iter"] for r in records if r.get("eval")][:3] == [20, 25, 40]  # 25: the timed evaluation
    _, meta = load_checkpoint(tmp_path / "run", which="latest")
    assert meta["schedule_end"] == end and meta["train_config"]["max_iters"] == 0
    # The checkpoint written by the timed evaluation records the end too: a crash soon after loses nothing.
    assert load_checkpoint(next((tmp_path / "run").glob("ckpt_iter000025_*.npz")))[1]["schedule_end"] == end


def test_a_longer_budget_times_more_iterations_before_fixing_the_end(tiny_corpus, tmp_path):
    """10 minutes: the timing spans 4% of it, 24 s of 0.5 s iterations, 48 of them after the first 5."""
    lines = []
    budget = {**BUDGETED, "max_minutes": 10, "eval_every": 100}
    config = small_config(tiny_corpus, tmp_path / "run", max_iters=0, **budget)
    trainer = Trainer(config, log=lines.append)
    FakeClock().drive(trainer)
    interrupt_at(trainer, at_call=60)
    assert trainer.run() == "interrupted"
    (schedule,) = [line for line in lines if line.startswith("schedule:")]
    assert "(measured 500 ms/iter over iterations 6-53, evaluations ~1 s each; budget 10 min)" in schedule
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in records if not r.get("eval")]
    end = trainer.state.schedule_end
    assert logged[:53] == pytest.approx([cosine_rate(config, i) for i in range(53)])
    assert logged[53:] == pytest.approx([cosine_rate(config, i, end=end) for i in range(53, len(logged))])


def test_a_run_that_max_epochs_ends_early_times_a_share_of_that_run_only(tiny_corpus, tmp_path):
    """30 minutes, but one epoch (84 iterations, 42 s) ends the run: 4% of it is under the 20
    iterations timed anyway, so the end is fixed at iteration 25 and the cosine reaches --min-lr."""
    lines = []
    config = small_config(tiny_corpus, tmp_path / "run", max_iters=0, max_epochs=1, **{**BUDGETED, "max_minutes": 30})
    trainer = Trainer(config, log=lines.append)
    FakeClock().drive(trainer)
    trainer.run()
    assert any("over iterations 6-25" in line and "--max-epochs 1 comes before" in line for line in lines)
    assert trainer.state.schedule_end == 84 == trainer.state.iteration
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if not r.get("eval")][-1] == pytest.approx(5e-4, rel=1e-2)


def test_a_time_budgeted_cosine_resumes_with_its_recorded_end(tiny_corpus, tmp_path):
    resumed_lines = []

    def prepare(trainer, part):
        if part == "resumed":
            assert trainer.state.schedule_end == 104  # from the checkpoint at iteration 35
            trainer.log = resumed_lines.append
            FakeClock(step=0.05).drive(trainer)  # were it measured again, this speed would move the end
        else:
            FakeClock().drive(trainer)
        if part == "first":
            interrupt_at(trainer, at_call=36)

    straight, _, meta = assert_resume_is_exact(tiny_corpus, tmp_path, 0, 0, prepare=prepare, **BUDGETED)
    assert meta["iteration"] == 104 and meta["schedule_end"] == 104
    assert load_checkpoint(tmp_path / "split", which="latest")[1]["iteration"] == 104
    assert resumed_lines and not any(line.startswith("schedule:") for line in resumed_lines)
    assert "stopped (reached the cosine's end at iteration 104" in resumed_lines[-1]


def test_a_given_length_is_kept_under_a_time_budget(tiny_corpus, tmp_path):
    lines = []
    config = small_config(tiny_corpus, tmp_path / "run", max_iters=30, **BUDGETED)
    trainer = Trainer(config, log=lines.append)
    FakeClock().drive(trainer)
    trainer.run()
    assert trainer.state.iteration == 30 and not any(line.startswith("schedule:") for line in lines)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if not r.get("eval")] == pytest.approx([cosine_rate(config, i) for i in range(30)])
    assert load_checkpoint(tmp_path / "run", which="latest")[1]["schedule_end"] is None


def test_resuming_from_an_older_checkpoint_logs_replayed_iterations_once(tiny_corpus, tmp_path):
    """As after a crash: the newest checkpoint is gone, so iterations 21-30 run a second time."""
    out = tmp_path / "run"
    run_training(small_config(tiny_corpus, out, max_iters=30), log=quiet)
    first_log = (out / "metrics.jsonl").read_text()
    list_checkpoints(out)[-1].path.unlink()
    with open(out / "metrics.jsonl", "a") as metrics:
        metrics.write('{"iter": 31, "train_lo')  # a line torn by the crash
    Trainer(small_config(tiny_corpus, out, max_iters=30), resume_from=out, log=quiet).run()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["iter"] for r in records if not r.get("eval")]
    assert steps == list(range(1, 31))
    assert [r["iter"] for r in records if r.get("eval")] == [10, 20, 30]
    assert [r["train_loss"] for r in records if not r.get("eval")] == [
        json.loads(line)["train_loss"] for line in first_log.splitlines() if '"eval"' not in line
    ]


def test_resume_refuses_another_corpus_or_shape(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    run_training(small_config(tiny_corpus, out, max_iters=10), log=quiet)
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text() + "more text at the end\n")
    with pytest.raises(CharrnnError, match="another corpus"):
        Trainer(small_config(other, out), resume_from=out, log=quiet)
    with pytest.raises(CharrnnError, match="--hidden 16"):
        Trainer(small_config(tiny_corpus, out, hidden=32), resume_from=out, log=quiet)


def test_a_fresh_run_refuses_a_directory_with_checkpoints(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    run_training(small_config(tiny_corpus, out, max_iters=10), log=quiet)
    with pytest.raises(CharrnnError, match="--resume"):
        Trainer(small_config(tiny_corpus, out), log=quiet)


def fail_once(trainer, monkeypatch, at_call):
    """The model's `at_call`-th forward/backward reports a NaN loss; the others run normally."""
    real = trainer.model.loss_and_grads
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise NonFiniteLoss("the loss became nan")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "loss_and_grads", flaky)


def test_divergence_rolls_back_halves_lr_and_continues(tiny_corpus, tmp_path, monkeypatch):
    lines = []
    trainer = Trainer(small_config(tiny_corpus, tmp_path / "run", max_iters=12), log=lines.append)
    fail_once(trainer, monkeypatch, at_call=8)
    trainer.run()
    assert trainer.state.iteration == 12
    assert any("rolled back" in line for line in lines)
    assert trainer.state.optimizer.lr == pytest.approx(trainer.config.lr / 2)


def test_divergence_under_the_cosine_schedule_halves_the_whole_schedule(tiny_corpus, tmp_path, monkeypatch):
    config = small_config(tiny_corpus, tmp_path / "run", max_iters=12, lr_schedule="cosine", min_lr=1e-4)
    trainer = Trainer(config, log=quiet)
    fail_once(trainer, monkeypatch, at_call=5)
    trainer.run()
    assert trainer.state.iteration == 12 and trainer.state.lr_scale == 0.5
    assert trainer.state.optimizer.lr == pytest.approx(0.5 * cosine_rate(config, 11))
    _, meta = load_checkpoint(tmp_path / "run", which="latest")
    assert meta["lr_scale"] == 0.5


def test_persistent_divergence_stops_with_a_clear_error(tiny_corpus, tmp_path, monkeypatch):
    trainer = Trainer(small_config(tiny_corpus, tmp_path / "run"), log=quiet)

    def always_nan(*args, **kwargs):
        raise NonFiniteLoss("the loss became nan")

    monkeypatch.setattr(trainer.model, "loss_and_grads", always_nan)
    with pytest.raises(CharrnnError, match=f"diverged {MAX_ROLLBACKS} times"):
        trainer.run()


def test_ctrl_c_saves_a_loadable_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(small_config(tiny_corpus, out, max_iters=100), log=quiet)
    real = trainer.model.loss_and_grads
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "loss_and_grads", interrupted)
    assert trainer.run() == "interrupted"
    arrays, meta = load_checkpoint(out, which="latest")
    assert meta["iteration"] == 6
    assert meta["loader"]["position"] == 6 * 16  # the interrupted window is not skipped on resume
    resumed = Trainer(small_config(tiny_corpus, out, max_iters=8), resume_from=out, log=quiet)
    assert resumed.state.iteration == 6
    assert not list(out.glob("*.tmp*"))


def test_a_ctrl_c_outside_a_step_stops_the_run_after_it(tiny_corpus, tmp_path, monkeypatch):
    """A SIGINT that lands between steps (logging, evaluating, inside a finalizer where Python would
    drop a KeyboardInterrupt) is remembered, and the run stops after the step and saves."""
    out = tmp_path / "run"
    trainer = Trainer(small_config(tiny_corpus, out, max_iters=100, print_every=1), log=quiet)
    real = trainer.run_dir.log_step

    def log_step(record):
        real(record)
        if record["iter"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trainer.run_dir, "log_step", log_step)
    before = signal.getsignal(signal.SIGINT)
    assert trainer.run() == "interrupted"
    _, meta = load_checkpoint(out, which="latest")
    assert meta["iteration"] == 5
    assert signal.getsignal(signal.SIGINT) is before  # put back


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_size=500, seq_length=100), "needs at least"),
        (dict(lr=-1.0), "--lr"),
        (dict(dropout=1.0), "--dropout"),
        (dict(weight_drop=-0.1), "--weight-drop"),
        (dict(hidden=0), "--hidden"),
        (dict(lr_schedule="cosine", max_iters=0), "needs an end"),
        (dict(lr_schedule="cosine", min_lr=1.0), "--min-lr"),
        (dict(lr_schedule="cosine", warmup_iters=50), "--warmup-iters"),
        (dict(lr_schedule="linear"), "--lr-schedule"),
    ],
)
def test_bad_settings_are_refused(tiny_corpus, tmp_path, overrides, message):
    with pytest.raises(CharrnnError, match=message):
        Trainer(small_config(tiny_corpus, tmp_path / "run", **overrides), log=quiet)


def test_weight_drop_trains_resumes_bit_identically_and_is_recorded(tiny_corpus, tmp_path):
    _, arrays_a, meta_a = assert_resume_is_exact(tiny_corpus, tmp_path, 20, 9, weight_drop=0.3, dropout=0.2)
    assert meta_a["model"]["weight_drop"] == 0.3
    plain = tmp_path / "plain"
    run_training(small_config(tiny_corpus, plain, max_iters=20, dropout=0.2), log=quiet)
    assert not np.array_equal(
        load_checkpoint(plain, which="latest")[0]["param/layer0.W_h"], arrays_a["param/layer0.W_h"]
    )


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_every_cell_type_trains_and_resumes(tiny_corpus, tmp_path, cell):
    out = tmp_path / cell
    run_training(small_config(tiny_corpus, out, model=cell, max_iters=10), log=quiet)
    trainer = Trainer(small_config(tiny_corpus, out, model=cell, max_iters=20), resume_from=out, log=quiet)
    trainer.run()
    model, _, meta = load_model(out, which="latest")
    assert model.config.cell == cell and meta["iteration"] == 20
    assert np.isfinite(meta["history"][-1]["val_loss"])


@pytest.mark.parametrize("split", ["batch", "units"])
def test_a_run_records_its_plan_and_resumes_on_it(tiny_corpus, tmp_path, monkeypatch, split):
    """Each plan resumes bit-identically, and a resumed run keeps the recorded plan even when this
    machine would now choose another."""
    from charrnn.plan import Plan

    monkeypatch.setattr("charrnn.plan.MIN_PART_ROWS", 1)
    monkeypatch.setattr("charrnn.plan.MIN_PART_UNITS", 1)
    chosen = {"plan": Plan(split, 2)}
    monkeypatch.setattr("charrnn.train_start.choose_plan", lambda *args, **kwargs: chosen["plan"])

    def prepare(trainer, part):
        assert trainer.model.plan == Plan(split, 2)
        if part == "first":  # from now on this machine would pick the other split
            chosen["plan"] = Plan("units" if split == "batch" else "batch", 2)

    straight, _, meta = assert_resume_is_exact(tiny_corpus, tmp_path, 16, 7, prepare=prepare)
    assert meta["plan"] == {"split": split, "threads": 2}
    assert load_model(straight)[0].plan == Plan(split, 2)


def test_a_forced_plan_is_used_without_timing(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr("charrnn.plan.MIN_PART_UNITS", 1)
    monkeypatch.setattr("charrnn.train_start.thread_budget", lambda: 2)
    monkeypatch.setattr("charrnn.train_start.choose_plan", lambda *args, **kwargs: pytest.fail("timed a forced plan"))
    lines = []
    run_training(small_config(tiny_corpus, tmp_path / "run", max_iters=3, plan="units"), log=lines.append)
    assert load_checkpoint(tmp_path / "run", which="latest")[1]["plan"]["split"] == "units"
    assert any("units split (hidden units shared between" in line for line in lines)
    with pytest.raises(CharrnnError, match="--plan must be"):
        small_config(tiny_corpus, tmp_path / "other", plan="diagonal").validate()


def test_resuming_on_fewer_cores_than_the_plan_keeps_it_and_says_so(tiny_corpus, tmp_path, monkeypatch):
    from charrnn.plan import Plan

    monkeypatch.setattr("charrnn.plan.MIN_PART_ROWS", 1)
    monkeypatch.setattr("charrnn.train_start.choose_plan", lambda *args, **kwargs: Plan("batch", 2))
    run_training(small_config(tiny_corpus, tmp_path / "run", max_iters=2), log=quiet)
    monkeypatch.setattr("charrnn.train_start.usable_cores", lambda: 1)
    lines = []
    trainer = Trainer(
        small_config(tiny_corpus, tmp_path / "run", max_iters=3), resume_from=tmp_path / "run", log=lines.append
    )
    assert trainer.model.plan == Plan("batch", 2)
    assert any("plan runs 2 threads" in line and "1 usable" in line for line in lines)
