"""The training loop: truncated BPTT over B carried streams, with evaluations, samples and checkpoints.

Read `Trainer.run` top to bottom: each iteration gets a batch, runs forward and backward, clips the
gradients, guards against divergence (rolling back to a snapshot at half the rate), steps the
optimizer, logs, and now and then evaluates and saves. Its parts live beside it:

    charrnn.train_config   the options (TrainConfig)
    charrnn.train_start    where a run starts: fresh, from --init-from weights, or resumed
    charrnn.schedule       learning rates as pure functions (get_lr); fitting a cosine to a time budget
    charrnn.train_corpus   what the run reads: vocabulary, train and validation ids
    charrnn.train_state    what the run changes, and how that becomes a checkpoint and back
    charrnn.run_dir        what the run writes: checkpoints and pointers, metrics.jsonl, samples, loss.png
    charrnn.distributed    an MPI job's ranks: each runs its share of the streams, the gradients are summed
                           between backward and clipping (DataParallel), rank 0 alone evaluates and writes

A resumed run reads its checkpoint once (a charrnn.run_dir.ResumePoint) and continues bit for bit:
N iterations + resume + N more equals 2N straight.
"""

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict

import numpy as np

from charrnn.distributed import DataParallel, World, together
from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate_loss
from charrnn.model import NonFiniteLoss
from charrnn.optim import clip_grad_norm, clip_grad_value, grad_norm
from charrnn.schedule import MEASURE_AFTER, MEASURE_ITERS, fit_cosine_end, get_lr, iterations_to_time
from charrnn.train_start import start_run, warm_up

# The Unreasonable Effectiveness post shows samples at these iterations; evaluations add more.
SAMPLE_MILESTONES = (100, 300, 500, 700, 1000, 1200, 2000)
MAX_ROLLBACKS = 4  # divergences in a row before giving up
BLOWUP_FACTOR = 3.0  # char-rnn treats a loss above 3x the first one as an explosion
SNAPSHOT_EVERY = 100  # iterations between the snapshots a divergence rolls back to
LN2 = math.log(2.0)


class Diverged(Exception):
    """The gradient norm is not finite, or the loss exploded: roll back."""


def guard(loss, norm, first_loss):
    if not math.isfinite(norm):
        raise Diverged(f"the gradient norm became {norm}")
    if loss > BLOWUP_FACTOR * first_loss:
        raise Diverged(f"the loss jumped to {loss:.3f}, over {BLOWUP_FACTOR:g}x the first loss {first_loss:.3f}")


class Trainer:
    def __init__(self, config, resume_from=None, log=print, clock=time.perf_counter, base=None, world=None):
        """resume_from: a run directory, or the ResumePoint already read from one. base: the --init-from
        checkpoint as charrnn.saved.load_model gives it, when the caller has loaded it already.
        clock: times every duration the run measures or limits (tests pass a fake one). world: the
        charrnn.distributed.World of an MPI job (default: this process alone)."""
        config.validate()
        self.config, self.log, self.clock = config, log, clock
        self.world = world = world or World()
        start = together(world, lambda: start_run(config, resume_from, log, base, world))
        self.run_dir, self.continuing, self.corpus = start.run_dir, start.continuing, start.corpus
        self.model, self.state = start.model, start.state
        self.vocab, self.unigram = self.corpus.vocab, self.corpus.unigram
        self.grads = self.model.zeros_like_params()
        # Between backward and clipping, the ranks of an MPI job sum their gradients (charrnn.distributed).
        self.parallel = DataParallel(world, self.model, config.batch_size)
        if world.distributed:
            record = {key: value for key, value in self.corpus.record.items() if key != "path"}
            options = {key: value for key, value in asdict(config).items() if key not in ("corpus", "out")}
            world.check_same_start({**options, **record, "vocab": self.vocab.to_dict(), "out": str(self.run_dir.path)})
            world.check_same_params(self.model.params, self.state.iteration)
        self.last_loss = math.nan  # the last iteration's, for an evaluation when the run stops
        self._rollbacks = 0  # divergences in a row

    # ---------------------------------------------------------------------------- the loop
    def run(self):
        cfg, state, model = self.config, self.state, self.model
        compile_started = self.clock()
        warm_up(model, state.optimizer, self.vocab, self.unigram, cfg.batch_size)
        self.log(
            f"{model.config.cell} {cfg.layers}x{cfg.hidden}, {model.num_parameters:,} parameters, "
            f"vocabulary {len(self.vocab)}, train {len(self.corpus.train):,} / val {len(self.corpus.val):,} chars, "
            f"{state.loader.batches_per_epoch} iterations per epoch; kernels ready in "
            f"{self.clock() - compile_started:.1f}s; {model.plan.describe(cfg.batch_size, cfg.hidden)}"
        )
        if self.continuing:
            self.run_dir.forget_metrics_after(state.iteration)
        started, seconds_before = self.clock(), state.train_seconds
        # A time-budgeted cosine times this session's iterations from MEASURE_AFTER+1 (see charrnn.schedule).
        measuring = cfg.fits_cosine_to_budget and state.schedule_end is None
        # Under MPI every rank must stop after the same iteration, and the launcher ends the ranks itself.
        stop_asked = nullcontext([]) if self.world.distributed else interrupt_requests()
        with stop_asked as asked:
            reason = self._loop(started, seconds_before, measuring, asked)
        state.train_seconds = seconds_before + self.clock() - started
        if reason == "interrupted":
            self.log("interrupted: saving a checkpoint before exiting")
            self._save(val_loss=None)  # quickly: a second Ctrl-C should not find us evaluating
        elif not state.history or state.history[-1]["iter"] != state.iteration:
            self._evaluate_and_save(self.last_loss)
        self.run_dir.close()
        self.log(
            f"stopped ({reason}) at iteration {state.iteration} after {state.train_seconds / 60:.1f} min; "
            f"run in {self.run_dir.path}"
        )
        return reason

    def _loop(self, started, seconds_before, measuring, asked):
        """Iterations until a limit or a Ctrl-C (`asked` fills on the first) ends the run; returns why."""
        cfg, state, model, grads = self.config, self.state, self.model, self.grads
        window_start, window_iters = self.clock(), 0  # the progress line's speed, evaluations left out
        session_iters, timed_seconds = 0, 0.0
        to_time = None  # iterations a budgeted cosine times (charrnn.schedule.iterations_to_time)
        snapshot = None
        try:
            while not (reason := "interrupted" if asked else self._stop_reason(started)):
                step_started = self.clock()
                # A Ctrl-C waits for the iteration to finish; an exception inside undoes its batch and RNG draws.
                with interrupts_deferred(), state.undone_on_error():
                    if snapshot is None or state.iteration % SNAPSHOT_EVERY == 0:
                        snapshot = state.snapshot(model.params)
                    # Get a batch: row b continues row b of the last one, so its hidden state carries over.
                    inputs, targets, reset = state.loader.next_batch()
                    carried = np.zeros_like(state.carried) if reset else state.carried
                    lr = state.lr_scale * get_lr(cfg, state.iteration, state.loader.epoch, state.schedule_end)
                    try:
                        # Forward and backward.
                        for grad in grads.values():
                            grad.fill(0.0)
                        loss, carried = self.parallel.loss_and_grads(model, inputs, targets, carried, grads, state.rng)
                        if state.first_loss is None:
                            state.first_loss = loss
                        # Clip by global norm (or just measure it), then guard against divergence.
                        norm = clip_grad_norm(grads, cfg.max_grad_norm) if cfg.max_grad_norm else grad_norm(grads)
                        guard(loss, norm, state.first_loss)
                    except (NonFiniteLoss, Diverged) as error:
                        self._roll_back(snapshot, str(error))
                        continue
                    if cfg.grad_clip:
                        clip_grad_value(grads, cfg.grad_clip)
                    # Step.
                    state.optimizer.lr = lr
                    state.optimizer.step(model.params, grads)
                    state.carried, state.iteration = carried, state.iteration + 1
                    self._rollbacks = 0
                self.parallel.check_params(model.params, state.iteration)

                # Log.
                window_iters += 1
                session_iters += 1
                state.train_seconds = seconds_before + self.clock() - started
                self.run_dir.log_step(
                    {
                        "iter": state.iteration,
                        "epoch": round(state.epoch, 4),
                        "train_loss": round(loss, 5),
                        "lr": lr,
                        "grad_norm": round(norm, 4),
                        "seconds": round(state.train_seconds, 2),
                    }
                )
                if state.iteration % cfg.print_every == 0:
                    per_iter = (self.clock() - window_start) / window_iters
                    self.log(self._progress_line(loss, lr, per_iter, self.clock() - started))
                    self.run_dir.flush()
                    window_start, window_iters = self.clock(), 0
                self.last_loss = loss

                # Evaluate and checkpoint (a budgeted cosine's first evaluation is brought forward to time it).
                if measuring and session_iters > MEASURE_AFTER:
                    timed_seconds += self.clock() - step_started
                timed_iters = session_iters - MEASURE_AFTER
                if measuring and timed_iters == MEASURE_ITERS:  # the same iteration on every rank
                    to_time = self.world.broadcast(
                        iterations_to_time(
                            cfg, timed_seconds / timed_iters, self.clock() - started, self._iterations_to_max_epochs()
                        )
                    )
                fix_now = measuring and timed_iters == to_time
                evaluate_now = fix_now or state.iteration % cfg.eval_every == 0
                if fix_now:
                    self._fix_schedule_end(timed_seconds / timed_iters, timed_iters, started, loss)
                    measuring = False
                elif evaluate_now:
                    self._evaluate_and_save(loss)
                elif cfg.checkpoint_every and state.iteration % cfg.checkpoint_every == 0:
                    self._save(val_loss=None)
                milestone = state.iteration in SAMPLE_MILESTONES
                if milestone and not evaluate_now:
                    self._write_sample(val_loss=None)
                if evaluate_now or milestone:
                    window_start, window_iters = self.clock(), 0  # keep that time out of chars/s
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            self.run_dir.close()
        return reason

    # ------------------------------------------------------------------ when to stop, progress
    def _last_iteration(self):
        """--max-iters, or else the end a time-budgeted cosine fixed (0: neither)."""
        cfg, end = self.config, self.state.schedule_end
        return cfg.max_iters or (end if cfg.fits_cosine_to_budget and end else 0)

    def _stop_reason(self, started):
        cfg, state = self.config, self.state
        if cfg.max_iters and state.iteration >= cfg.max_iters:
            return f"reached --max-iters {cfg.max_iters}"
        if cfg.fits_cosine_to_budget and state.schedule_end and state.iteration >= state.schedule_end:
            return f"reached the cosine's end at iteration {state.schedule_end}, fitted to --max-minutes {cfg.max_minutes:g}"
        if cfg.max_epochs and state.epoch >= cfg.max_epochs:
            return f"reached --max-epochs {cfg.max_epochs:g}"
        if cfg.max_minutes and self.parallel.time_is_up(self.clock() - started >= cfg.max_minutes * 60):
            return f"reached --max-minutes {cfg.max_minutes:g}"
        return None

    def _progress_line(self, loss, lr, per_iter, elapsed):
        """'iter N/total | epoch | loss | lr | chars/s | ms/iter | eta', the eta until the first of
        --max-iters (or the fixed cosine's end), --max-minutes and --max-epochs ends the run."""
        cfg, state, last = self.config, self.state, self._last_iteration()
        line = (
            f"iter {state.iteration:>6}{f'/{last}' if last else ''} | epoch {state.epoch:6.2f} | loss {loss:.4f} | "
            f"lr {lr:.2e} | {cfg.batch_size * cfg.seq_length / per_iter / 1000:6.1f}k chars/s | "
            f"{per_iter * 1000:5.0f} ms/iter"
        )
        left = []
        if last:
            left.append((last - state.iteration) * per_iter)
        if cfg.max_minutes:
            left.append(cfg.max_minutes * 60 - elapsed)
        if cfg.max_epochs:
            left.append((cfg.max_epochs - state.epoch) * state.loader.batches_per_epoch * per_iter)
        if not left:
            return line
        hours, rest = divmod(max(0, int(min(left))), 3600)
        return line + (f" | eta {hours}h{rest // 60:02d}m" if hours else f" | eta {rest // 60}m{rest % 60:02d}s")

    # ----------------------------------------------------------- divergence, fitted schedule
    def _roll_back(self, snapshot, what):
        cfg, state = self.config, self.state
        self._rollbacks += 1
        if self._rollbacks > MAX_ROLLBACKS:
            self._save(val_loss=None)
            raise CharrnnError(
                f"training diverged {MAX_ROLLBACKS} times in a row ({what}); lower --lr or set --max-grad-norm "
                f"(the last good state is saved in {self.run_dir.path})"
            )
        failed = state.iteration + 1
        state.roll_back(snapshot, self.model.params)
        state.lr_scale *= 0.5
        lr = state.lr_scale * get_lr(cfg, state.iteration, state.loader.epoch, state.schedule_end)
        self.log(
            f"warning: {what} at iteration {failed}; rolled back to iteration {state.iteration} "
            f"and halved the learning rate to {lr:.2e}"
        )

    def _iterations_to_max_epochs(self):
        """Iterations left until --max-epochs ends the run (None without it)."""
        cfg, state = self.config, self.state
        if not cfg.max_epochs:
            return None
        return math.ceil((cfg.max_epochs - state.epoch) * state.loader.batches_per_epoch - 1e-9)

    def _fix_schedule_end(self, per_iter, timed_iters, started, train_loss):
        """Sets, once, where the cosine reaches --min-lr (charrnn.schedule.fit_cosine_end). The run
        evaluates here, early, to time a whole evaluation: validation pass, checkpoint, sample and loss
        curve (for a small model the last three cost more than the pass)."""
        cfg, state = self.config, self.state
        evaluation_started = self.clock()
        val_loss = self._evaluate_and_save(train_loss)
        per_eval = self.clock() - evaluation_started
        to_max_epochs = self._iterations_to_max_epochs()
        end, limit = fit_cosine_end(cfg, state.iteration, self.clock() - started, per_iter, per_eval, to_max_epochs)
        if end <= cfg.warmup_iters:
            self.log(
                f"warning: the budget holds about {end} iterations, too few to get past --warmup-iters "
                f"{cfg.warmup_iters}; raise --max-minutes or lower --warmup-iters"
            )
        end = max(end, state.iteration + 1, cfg.warmup_iters + 1)  # passed already: the budget stops it
        state.schedule_end = self.world.broadcast(end)  # rank 0's measurement, for every rank
        self.log(
            f"schedule: cosine fixed to end at iteration {state.schedule_end} (measured {per_iter * 1000:.0f} ms/iter "
            f"over iterations {state.iteration - timed_iters + 1}-{state.iteration}, evaluations ~{per_eval:.3g} s "
            f"each; {limit})"
        )
        self._save(val_loss)  # again: the checkpoint just written predates the end, and a resume needs it

    # ------------------------------------------------------------------- evaluate and save
    def _evaluate_and_save(self, train_loss):
        cfg, state = self.config, self.state
        val_loss = None
        if len(self.corpus.val) >= 2 and self.run_dir.writer:  # the ranks of an MPI job leave it to rank 0
            started = self.clock()
            val_loss = evaluate_loss(self.model, self.corpus.val, cfg.batch_size, cfg.seq_length)["loss_nats"]
            seconds = self.clock() - started
        entry = {
            "iter": state.iteration,
            "epoch": round(state.epoch, 4),
            "train_loss": None if train_loss is None or math.isnan(train_loss) else round(train_loss, 5),
            "val_loss": None if val_loss is None else round(val_loss, 5),
            "seconds": round(state.train_seconds, 2),
        }
        state.history.append(entry)
        bits = None if val_loss is None else round(val_loss / LN2, 5)
        self.run_dir.log_evaluation({**entry, "val_bits_per_char": bits})
        if val_loss is not None:
            best = "  (best so far)" if val_loss < state.best_val_loss else ""
            self.log(
                f"eval  iter {state.iteration}: val loss {val_loss:.4f} nats/char = {val_loss / LN2:.4f} bits/char "
                f"({seconds:.1f}s){best}"
            )
        self._save(val_loss)
        self._write_sample(val_loss)
        self.run_dir.draw_loss_curve(state.history)
        return val_loss

    def _save(self, val_loss):
        is_best = self.state.note_val_loss(val_loss)
        meta, arrays = self.state.to_checkpoint(val_loss)
        meta.update(train_config=asdict(self.config), corpus=self.corpus.record, unigram=self.unigram)
        meta["world_size"] = self.world.size
        return self.run_dir.save_checkpoint(
            self.model, self.vocab, meta, arrays, val_loss, is_best, keep_last=self.config.keep_last
        )

    def _write_sample(self, val_loss):
        from charrnn.sampling import generate

        cfg, state = self.config, self.state
        if not self.run_dir.writer:
            return
        seed = cfg.seed * 1_000_003 + state.iteration  # its own stream: sampling never moves the training RNG
        chunks = generate(
            self.model,
            self.vocab,
            cfg.sample_length,
            temperature=cfg.sample_temperature,
            seed=seed,
            start_probs=self.unigram,
        )
        text = "".join(chunk for _, chunk in chunks)
        self.run_dir.write_sample(state.iteration, state.epoch, val_loss, cfg.sample_temperature, seed, text)


@contextmanager
def interrupt_requests():
    """Yields a list that the first Ctrl-C fills, for the loop to stop after its current step and save;
    a second Ctrl-C interrupts at once. Python's own handler raises KeyboardInterrupt wherever the
    main thread is, and one raised inside a finalizer (a weakref callback, a __del__) is printed and
    dropped, so a run could miss a Ctrl-C (seen under charrnn tune, which stops trials with SIGINT)."""
    asked = []
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def ask(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def interrupts_deferred():
    """Holds a Ctrl-C that arrives inside the block until the block ends, so an iteration is
    applied whole or not at all and the checkpoint saved on interrupt is consistent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def run_training(config, resume_from=None, log=print, base=None, world=None):
    return Trainer(config, resume_from=resume_from, log=log, base=base, world=world).run()
