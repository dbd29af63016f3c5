"""The training loop: truncated BPTT over B carried streams, evaluation, samples, checkpoints, resume.

A run directory holds checkpoints (ckpt_iter<N>_val<loss>.npz, with best.json / latest.json
pointers), metrics.jsonl (one JSON object per training iteration and per evaluation),
loss.png (redrawn at each evaluation) and samples/ (text generated at milestones).

Resuming restores parameters, optimizer state, data position, dropout RNG, carried hidden state
and learning rate, so N iterations + resume + N more equals 2N straight, bit for bit.

A cosine schedule with a time budget (--max-minutes) but no length (--max-iters, --lr-decay-iters)
times its first iterations, then fixes once where the cosine ends, so it finishes within the budget
on a slow machine as on a fast one. That end is state, like lr_scale: checkpoints record it and a
resumed run uses it, never measuring again.
"""

import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from charrnn.checkpoint import (
    POINTER_FILES,
    atomic_write,
    checkpoint_name,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    stale_pointer,
    update_pointers,
)
from charrnn.corpora import file_sha256
from charrnn.data import BatchLoader, ids_in_vocab, load_corpus, split_corpus
from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate_loss
from charrnn.model import Model, ModelConfig, NonFiniteLoss
from charrnn.optim import clip_grad_norm, clip_grad_value, grad_norm, make_optimizer
from charrnn.parallel import thread_budget, usable_cores
from charrnn.plan import SPLITS, Plan
from charrnn.planner import choose_plan
from charrnn.saved import load_model, model_from_checkpoint, save_model

# The Unreasonable Effectiveness post shows samples at these iterations; evaluations add more.
SAMPLE_MILESTONES = (100, 300, 500, 700, 1000, 1200, 2000)
MAX_ROLLBACKS = 4  # divergences in a row before giving up
BLOWUP_FACTOR = 3.0  # char-rnn treats a loss above 3x the first one as an explosion
LN2 = math.log(2.0)
# A time-budgeted cosine times iterations MEASURE_AFTER+1 .. MEASURE_AFTER+MEASURE_ITERS of its session
# (the first few still touch fresh memory and start threads, so they run slower than the rest), then
# one evaluation, brought forward to the end of that window.
MEASURE_AFTER = 5
MEASURE_ITERS = 20
# Share of the budget the fitted cosine leaves free, as speed drifts on a shared machine. Overrunning
# is mild anyway: the budget then cuts the run where the cosine is within a hair of --min-lr.
SCHEDULE_MARGIN = 0.03


@dataclass
class TrainConfig:
    corpus: str
    out: str
    encoding: str = "utf-8"
    model: str = "lstm"
    layers: int = 2
    hidden: int = 128
    dropout: float = 0.0
    weight_drop: float = 0.0
    seq_length: int = 100
    batch_size: int = 50
    optimizer: str = "adam"
    lr: float = 4e-3
    lr_decay: float = 0.97
    lr_decay_after: float = 10.0  # epochs
    lr_schedule: str = "step"  # "step": char-rnn's per-epoch decay; "cosine": nanoGPT's warm-up and cosine
    warmup_iters: int = 0
    lr_decay_iters: int = 0  # where the cosine reaches --min-lr; 0: at --max-iters, else fitted to --max-minutes
    min_lr: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # element-wise clamp, as char-rnn
    max_grad_norm: float = 0.0  # global-norm clip; 0 turns it off
    val_frac: float = 0.1
    test_frac: float = 0.0
    max_epochs: float = 50.0
    max_iters: int = 0  # 0: no limit
    max_minutes: float = 0.0  # 0: no limit
    print_every: int = 10
    eval_every: int = 500
    checkpoint_every: int = 0  # 0: at every evaluation
    keep_last: int = 0  # 0: keep every checkpoint
    sample_length: int = 400
    sample_temperature: float = 0.8
    seed: int = 123
    init_from: str = ""  # a checkpoint (or run directory: its best) whose weights start this run
    plan: str = "auto"  # how windows are cut between threads (charrnn.plan); auto: timed once per machine

    # Options that define the model or its data: a resumed run must keep them.
    FIXED_ON_RESUME = ("encoding", "model", "layers", "hidden", "seq_length", "batch_size", "val_frac", "test_frac")

    def validate(self):
        for field in fields(self):
            if field.type not in (int, float):
                continue  # names (encoding, model, optimizer) are checked where they are used
            value, flag = getattr(self, field.name), "--" + field.name.replace("_", "-")
            # A resumed run's options come from checkpoint metadata, which may be damaged.
            allowed = (int, float) if field.type is float else int
            if not isinstance(value, allowed) or isinstance(value, bool):
                raise CharrnnError(f"{flag} must be a number ({field.type.__name__}), got {value!r}")
            if not math.isfinite(value):
                raise CharrnnError(f"{flag} must be a finite number, got {value}")
        positive = ("layers", "hidden", "seq_length", "batch_size", "print_every", "eval_every", "sample_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise CharrnnError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in (
            "max_iters",
            "max_minutes",
            "max_epochs",
            "checkpoint_every",
            "keep_last",
            "max_grad_norm",
            "grad_clip",
            "weight_decay",
            "lr_decay_after",
            "seed",
            "warmup_iters",
            "lr_decay_iters",
            "min_lr",
        ):
            if getattr(self, name) < 0:
                raise CharrnnError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CharrnnError(f"--lr must be a positive number, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise CharrnnError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if self.plan not in ("auto", *SPLITS):
            raise CharrnnError(f"--plan must be auto, {' or '.join(SPLITS)}, got {self.plan!r}")
        if self.lr_schedule not in ("step", "cosine"):
            raise CharrnnError(f"--lr-schedule must be step or cosine, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine":
            if not (self.cosine_end or self.max_minutes):
                raise CharrnnError(
                    "--lr-schedule cosine needs an end: give --max-iters or --lr-decay-iters, "
                    "or --max-minutes to fit it to a time budget"
                )
            if self.cosine_end and self.warmup_iters >= self.cosine_end:
                raise CharrnnError(
                    f"--warmup-iters {self.warmup_iters} must be below the cosine's end at iteration {self.cosine_end}"
                )
            if self.min_lr > self.lr:
                raise CharrnnError(f"--min-lr {self.min_lr:g} must not exceed --lr {self.lr:g}")
        if not 0 <= self.dropout < 1:
            raise CharrnnError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.weight_drop < 1:
            raise CharrnnError(f"--weight-drop must be in [0, 1), got {self.weight_drop}")
        if self.sample_temperature <= 0:
            raise CharrnnError(f"--sample-temperature must be positive, got {self.sample_temperature}")

    @property
    def cosine_end(self):
        """The cosine's end as the options give it; 0 when a time-budgeted run is to measure it."""
        return self.lr_decay_iters or self.max_iters

    @property
    def fits_cosine_to_budget(self):
        return self.lr_schedule == "cosine" and not self.cosine_end and self.max_minutes > 0

    def scheduled_lr(self, iteration, end=None):
        """The cosine schedule's rate for the update after `iteration` updates: a linear warm-up,
        then half a cosine from --lr down to --min-lr, flat after its end (as nanoGPT's get_lr).

        The end is --lr-decay-iters or --max-iters when given, else `end`, the one a time-budgeted
        run fixed. Until that is known the rate stays at --lr past the warm-up: the cosine is flat
        at its start, so the few iterations spent measuring barely differ from it.
        """
        if iteration < self.warmup_iters:
            return self.lr * (iteration + 1) / (self.warmup_iters + 1)
        end = self.cosine_end or end
        if not end:
            return self.lr
        progress = min(1.0, (iteration - self.warmup_iters) / (end - self.warmup_iters))
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class Trainer:
    def __init__(self, config, resume_from=None, log=print, clock=time.perf_counter):
        self.config = config
        self.log = log
        self.clock = clock  # every duration the run measures or limits; tests pass a fake one
        config.validate()
        self.out = Path(config.out)
        continuing = resume_from is not None and self.out.resolve() == Path(resume_from).resolve()
        self._continuing = continuing
        if not continuing and any(self.out.glob("ckpt_iter*.npz")):
            # Writing there would move its pointers and let --keep-last delete its checkpoints.
            raise CharrnnError(
                f"{self.out} already holds checkpoints; continue it with --resume {self.out} or pick a new --out"
            )

        resumed = self._read_resume_point(resume_from) if resume_from is not None else None
        corpus = load_corpus(config.corpus, config.encoding)
        self.vocab, ids, base_params = corpus.vocab, corpus.ids, None
        if config.init_from:
            # The run keeps its base model's vocabulary, which may hold symbols this corpus lacks.
            if resume_from is None:
                base_model, self.vocab, _ = load_model(config.init_from)
                self._check_base(base_model.config)
                base_params = {name: value.copy() for name, value in base_model.params.items()}
            else:
                self.vocab = resumed["vocab"]
            ids = ids_in_vocab(corpus, self.vocab, "the --init-from model")
        self.corpus_meta = {
            "path": str(Path(config.corpus).resolve()),
            "encoding": corpus.encoding,
            "sha256": file_sha256(config.corpus),
            "n_chars": corpus.n_chars,
            "val_frac": config.val_frac,
            "test_frac": config.test_frac,
        }
        self.splits = split_corpus(ids, config.val_frac, config.test_frac)
        # Character frequencies of the training text: where unprimed samples start.
        counts = np.bincount(self.splits["train"], minlength=len(self.vocab))
        self.unigram = (counts / counts.sum()).round(6).tolist()
        self.loader = BatchLoader(self.splits["train"], config.batch_size, config.seq_length)
        if config.val_frac > 0 and len(self.splits["val"]) < 2:
            raise CharrnnError("the validation split is too short to evaluate; raise --val-frac or use a longer corpus")

        model_config = ModelConfig(
            config.model, len(self.vocab), config.hidden, config.layers, config.dropout, config.weight_drop
        )
        self.model = Model(model_config, params=base_params, dtype=np.float32, seed=config.seed)
        if resume_from is None:  # a resumed run keeps the plan its checkpoint recorded
            self.model.plan = (
                choose_plan(model_config, config.batch_size, config.seq_length, note=log)
                if config.plan == "auto"
                else Plan(config.plan, thread_budget())
            )
        hyper = {"weight_decay": config.weight_decay} if config.optimizer == "adam" else {}
        self.optimizer = make_optimizer(config.optimizer, self.model.params, config.lr, **hyper)
        self.grads = self.model.zeros_like_params()
        self.rng = np.random.default_rng(config.seed)
        self.state = self.model.initial_state(config.batch_size)
        self.iteration = 0
        self.history = []  # evaluations: {"iter", "epoch", "train_loss", "val_loss"}
        self.best_val_loss = math.inf
        self.train_seconds = 0.0
        self.first_loss = None
        self.last_loss = math.nan
        self.lr_scale = 1.0  # halved at each divergence; the cosine schedule is multiplied by it
        self.schedule_end = None  # where a time-budgeted cosine ends, once measured
        self._rollbacks = 0
        if resume_from is not None:
            self._restore(**resumed)
        self._snapshot = None
        # Last, so a run refused for its corpus, options or checkpoint leaves no empty directory behind.
        self._prepare_out_dir()

    # ------------------------------------------------------------------------------- set-up
    def _check_base(self, base):
        cfg = self.config
        if (base.cell, base.layers, base.hidden) != (cfg.model, cfg.layers, cfg.hidden):
            raise CharrnnError(
                f"--init-from {cfg.init_from} holds a {base.cell} {base.layers}x{base.hidden} model but this run asks for "
                f"{cfg.model} {cfg.layers}x{cfg.hidden}; drop --model, --layers and --hidden to take the checkpoint's"
            )

    def _forget_metrics_after(self, iteration):
        """Drops metrics.jsonl records past `iteration`: resuming from an older checkpoint replays
        those iterations (identically), and the log should hold each once."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        kept, dropped = [], 0
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                try:
                    record_iteration = json.loads(line)["iter"]
                    keep = line.endswith("\n") and record_iteration <= iteration
                except (ValueError, KeyError, TypeError):
                    keep = False  # a line torn by a crash
                if keep:
                    kept.append(line)
                else:
                    dropped += 1
        if dropped:
            # Durable: the resumed run appends to this log, which must not come back torn after a crash.
            atomic_write(path, lambda out: out.write("".join(kept).encode("utf-8")))

    def _prepare_out_dir(self):
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            (self.out / "samples").mkdir(exist_ok=True)
        except OSError as error:
            raise CharrnnError(
                f"cannot write to the output directory {self.out} ({error.strerror}); choose another --out"
            ) from None

    def _read_resume_point(self, run_dir):
        """The run directory's latest checkpoint, read once: its path, arrays, metadata, model, vocabulary."""
        path = resolve_checkpoint(run_dir, which="latest")
        missing = stale_pointer(run_dir, "latest")
        if missing:
            self.log(
                f"warning: {Path(run_dir) / POINTER_FILES['latest']} names {missing}, which is gone; "
                f"resuming from {path.name}, the newest checkpoint left"
            )
        arrays, meta = load_checkpoint(path)
        model, vocab = model_from_checkpoint(arrays, meta, source=path)
        return {"path": path, "arrays": arrays, "meta": meta, "model": model, "vocab": vocab}

    def _restore(self, path, arrays, meta, model, vocab):
        saved = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
        for name in TrainConfig.FIXED_ON_RESUME:
            if name in saved and saved[name] != getattr(self.config, name):
                flag = "--" + name.replace("_", "-")
                raise CharrnnError(
                    f"the checkpoint was trained with {flag} {saved[name]} but this run asks for "
                    f"{getattr(self.config, name)}; drop {flag} to resume, or start a new run"
                )
        corpus_meta = meta.get("corpus") if isinstance(meta.get("corpus"), dict) else {}
        recorded = corpus_meta.get("sha256")
        if recorded and recorded != self.corpus_meta["sha256"]:
            raise CharrnnError(
                f"the checkpoint was trained on another corpus ({corpus_meta.get('path')}); "
                "resume with that file or start a new run"
            )
        if vocab != self.vocab or model.config != self.model.config:
            raise CharrnnError(
                "the checkpoint's model or vocabulary does not match this corpus and these options; start a new run"
            )
        self.model = model
        self.grads = self.model.zeros_like_params()
        try:
            self.optimizer = make_optimizer(**meta["optimizer"], params=self.model.params)
            self.optimizer.load_state_arrays(
                {k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")}
            )
            self.rng.bit_generator.state = meta["rng"]
            self.loader.load_state_dict(meta["loader"])
            self.state = np.ascontiguousarray(arrays["state/train"], dtype=np.float32)
            self.iteration = int(meta["iteration"])
            self.history = [dict(entry) for entry in meta.get("history", [])]
            self.best_val_loss = float(meta.get("best_val_loss") or math.inf)
            self.train_seconds = float(meta.get("train_seconds", 0.0))
            first_loss = meta.get("first_loss")
            self.first_loss = None if first_loss is None else float(first_loss)
            self.lr_scale = float(meta.get("lr_scale", 1.0))
            schedule_end = meta.get("schedule_end")
            self.schedule_end = None if schedule_end is None else int(schedule_end)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CharrnnError(
                f"{path} is a model-only or damaged checkpoint and cannot resume training ({error}); "
                "resume from another checkpoint or start a new run"
            ) from None
        if self.state.shape != self.model.initial_state(self.config.batch_size).shape:
            raise CharrnnError("the checkpoint's carried state does not fit this batch size; start a new run")
        self.log(f"resumed from {path} at iteration {self.iteration} (epoch {self.loader.epoch_fraction:.2f})")
        used = self.model.plan.parts(self.config.batch_size, self.config.hidden)
        if used > usable_cores():
            self.log(
                f"note: the checkpoint's plan runs {used} threads but this machine has {usable_cores()} usable "
                "cores; it keeps the plan so the run stays bit-exact, only slower"
            )

    # ---------------------------------------------------------------------------- main loop
    def run(self):
        cfg = self.config
        compile_seconds = self._warm_up()
        self.log(
            f"{self.model.config.cell} {cfg.layers}x{cfg.hidden}, {self.model.num_parameters:,} parameters, "
            f"vocabulary {len(self.vocab)}, train {len(self.splits['train']):,} / val {len(self.splits['val']):,} chars, "
            f"{self.loader.batches_per_epoch} iterations per epoch; kernels ready in {compile_seconds:.1f}s; "
            f"{self.model.plan.describe(cfg.batch_size, cfg.hidden)}"
        )
        if self._continuing:
            self._forget_metrics_after(self.iteration)
        metrics = open(self.out / "metrics.jsonl", "a", encoding="utf-8")
        started = self.clock()
        seconds_before = self.train_seconds
        window_start, window_iters = self.clock(), 0
        # Time of the session's iterations that time a budgeted cosine, evaluations left out.
        measuring = cfg.fits_cosine_to_budget and self.schedule_end is None
        session_iters, timed_seconds = 0, 0.0
        reason = "finished"
        try:
            while True:
                stop = self._stop_reason(started, seconds_before)
                if stop:
                    reason = stop
                    break
                step_started = self.clock()
                with interrupts_deferred():
                    loss, grad_norm = self._train_step()
                if loss is None:
                    continue
                window_iters += 1
                session_iters += 1
                self.train_seconds = seconds_before + self.clock() - started
                record = {
                    "iter": self.iteration,
                    "epoch": round(self.loader.epoch_fraction, 4),
                    "train_loss": round(loss, 5),
                    "lr": self.optimizer.lr,
                    "grad_norm": round(grad_norm, 4),
                    "seconds": round(self.train_seconds, 2),
                }
                metrics.write(json.dumps(record) + "\n")
                if self.iteration % cfg.print_every == 0:
                    per_iter = (self.clock() - window_start) / max(window_iters, 1)
                    self.log(
                        f"iter {self.iteration:>6}{self._of_total()} | epoch {self.loader.epoch_fraction:6.2f} | "
                        f"loss {loss:.4f} | lr {self.optimizer.lr:.2e} | "
                        f"{cfg.batch_size * cfg.seq_length / per_iter / 1000:6.1f}k chars/s | {per_iter * 1000:5.0f} ms/iter"
                        + self._eta(per_iter, self.clock() - started)
                    )
                    metrics.flush()
                    window_start, window_iters = self.clock(), 0
                self.last_loss = loss
                fixing = measuring and session_iters == MEASURE_AFTER + MEASURE_ITERS
                if measuring and session_iters > MEASURE_AFTER:
                    timed_seconds += self.clock() - step_started
                if fixing:
                    self._fix_schedule_end(timed_seconds / MEASURE_ITERS, started, loss, metrics)
                    measuring = False
                evaluate_now = fixing or self.iteration % cfg.eval_every == 0
                if evaluate_now and not fixing:
                    self._evaluate_and_save(loss, metrics)
                elif not evaluate_now and cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                    self._save(val_loss=None)
                if self.iteration in SAMPLE_MILESTONES and not evaluate_now:
                    self._write_sample(val_loss=None)
                if evaluate_now or self.iteration in SAMPLE_MILESTONES:
                    window_start, window_iters = self.clock(), 0  # keep eval time out of chars/s
        except KeyboardInterrupt:
            reason = "interrupted"
            self.log("interrupted: saving a checkpoint before exiting")
        finally:
            metrics.close()
        self.train_seconds = seconds_before + self.clock() - started
        if reason == "interrupted":
            self._save(val_loss=None)  # quickly: a second Ctrl-C should not find us evaluating
        elif not self.history or self.history[-1]["iter"] != self.iteration:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as metrics:
                self._evaluate_and_save(self.last_loss, metrics)
        self.log(
            f"stopped ({reason}) at iteration {self.iteration} after {self.train_seconds / 60:.1f} min; run in {self.out}"
        )
        return reason

    def _last_iteration(self):
        """--max-iters, or else the end a time-budgeted cosine fixed (0: neither)."""
        cfg = self.config
        return cfg.max_iters or (self.schedule_end if cfg.fits_cosine_to_budget and self.schedule_end else 0)

    def _of_total(self):
        return f"/{self._last_iteration()}" if self._last_iteration() else ""

    def _eta(self, per_iter, elapsed):
        """' | eta 12m05s' until the first of --max-iters (or the fixed cosine's end), --max-minutes,
        --max-epochs ends the run."""
        cfg = self.config
        left = []
        if self._last_iteration():
            left.append((self._last_iteration() - self.iteration) * per_iter)
        if cfg.max_minutes:
            left.append(cfg.max_minutes * 60 - elapsed)
        if cfg.max_epochs:
            left.append((cfg.max_epochs - self.loader.epoch_fraction) * self.loader.batches_per_epoch * per_iter)
        if not left:
            return ""
        seconds = max(0, int(min(left)))
        hours, rest = divmod(seconds, 3600)
        return f" | eta {hours}h{rest // 60:02d}m" if hours else f" | eta {rest // 60}m{rest % 60:02d}s"

    def _stop_reason(self, started, seconds_before):
        cfg = self.config
        if cfg.max_iters and self.iteration >= cfg.max_iters:
            return f"reached --max-iters {cfg.max_iters}"
        if cfg.fits_cosine_to_budget and self.schedule_end and self.iteration >= self.schedule_end:
            return f"reached the cosine's end at iteration {self.schedule_end}, fitted to --max-minutes {cfg.max_minutes:g}"
        if cfg.max_epochs and self.loader.epoch_fraction >= cfg.max_epochs:
            return f"reached --max-epochs {cfg.max_epochs:g}"
        if cfg.max_minutes and (self.clock() - started) >= cfg.max_minutes * 60:
            return f"reached --max-minutes {cfg.max_minutes:g}"
        return None

    def _train_step(self):
        """One iteration; returns (loss, grad norm), or (None, None) after rolling back a divergence.

        An exception before the update leaves data position, RNG and carried state as they were,
        so a checkpoint saved after it resumes with exactly this iteration.
        """
        before = (self.loader.state_dict(), self.rng.bit_generator.state, self.state, self.optimizer.lr, self.lr_scale)
        try:
            return self._step_once()
        except BaseException:
            loader_state, self.rng.bit_generator.state, self.state, self.optimizer.lr, self.lr_scale = before
            self.loader.load_state_dict(loader_state)
            raise

    def _step_once(self):
        cfg = self.config
        if self._snapshot is None or self.iteration % 100 == 0:
            self._take_snapshot()
        epoch_before = self.loader.epoch
        inputs, targets, reset = self.loader.next_batch()
        if reset:
            self.state = np.zeros_like(self.state)
        if cfg.lr_schedule == "cosine":
            self.optimizer.lr = self.lr_scale * cfg.scheduled_lr(self.iteration, end=self.schedule_end)
        elif self.loader.epoch != epoch_before and self.loader.epoch >= cfg.lr_decay_after and cfg.lr_decay < 1:
            self.optimizer.lr = self.optimizer.lr * cfg.lr_decay
        for grad in self.grads.values():
            grad.fill(0.0)
        try:
            loss, self.state = self.model.loss_and_grads(inputs, targets, self.state, self.grads, self.rng)
        except NonFiniteLoss as error:
            self._roll_back(str(error))
            return None, None
        if self.first_loss is None:
            self.first_loss = loss
        norm = clip_grad_norm(self.grads, cfg.max_grad_norm) if cfg.max_grad_norm else grad_norm(self.grads)
        if not math.isfinite(norm):
            self._roll_back(f"the gradient norm became {norm}")
            return None, None
        if loss > BLOWUP_FACTOR * self.first_loss:
            self._roll_back(
                f"the loss jumped to {loss:.3f}, over {BLOWUP_FACTOR:g}x the first loss {self.first_loss:.3f}"
            )
            return None, None
        if cfg.grad_clip:
            clip_grad_value(self.grads, cfg.grad_clip)
        self.optimizer.step(self.model.params, self.grads)
        self.iteration += 1
        self._rollbacks = 0
        return loss, norm

    # ------------------------------------------------------------------ time-budgeted schedule
    def _fix_schedule_end(self, per_iter, started, train_loss, metrics):
        """Sets, once, the iteration where the cosine reaches --min-lr: as many iterations as the
        budget left holds at the measured speed, an evaluation every --eval-every included.

        The run evaluates here, early, to time a whole evaluation: validation pass, checkpoint,
        sample and loss curve (for a small model the last three cost more than the pass).
        """
        cfg = self.config
        evaluation_started = self.clock()
        val_loss = self._evaluate_and_save(train_loss, metrics)
        per_eval = self.clock() - evaluation_started
        left = cfg.max_minutes * 60 * (1 - SCHEDULE_MARGIN) - (self.clock() - started)
        fits = int(max(left, 0.0) // max(per_iter + per_eval / cfg.eval_every, 1e-9))
        end, limit = self.iteration + fits, f"budget {cfg.max_minutes:g} min"
        if cfg.max_epochs:
            # A cosine the epoch limit cut would stop mid-way, as the budget would have.
            by_epochs = self.iteration + math.ceil(
                (cfg.max_epochs - self.loader.epoch_fraction) * self.loader.batches_per_epoch - 1e-9
            )
            if by_epochs < end:
                end, limit = (
                    by_epochs,
                    f"--max-epochs {cfg.max_epochs:g} comes before the {cfg.max_minutes:g} min budget",
                )
        if end <= cfg.warmup_iters:
            self.log(
                f"warning: the budget holds about {end} iterations, too few to get past --warmup-iters "
                f"{cfg.warmup_iters}; raise --max-minutes or lower --warmup-iters"
            )
        end = max(end, self.iteration + 1, cfg.warmup_iters + 1)  # an end already passed: the budget stops the run
        self.schedule_end = end
        self.log(
            f"schedule: cosine fixed to end at iteration {end} (measured {per_iter * 1000:.0f} ms/iter over "
            f"iterations {self.iteration - MEASURE_ITERS + 1}-{self.iteration}, evaluations ~{per_eval:.3g} s each; "
            f"{limit})"
        )
        self._save(val_loss)  # again: the checkpoint just written predates the end, and a resume needs it

    # ------------------------------------------------------------------------ divergence
    def _take_snapshot(self):
        self._snapshot = {
            "params": {k: v.copy() for k, v in self.model.params.items()},
            "optim": self.optimizer.state_arrays(),
            "loader": self.loader.state_dict(),
            "rng": self.rng.bit_generator.state,
            "state": self.state.copy(),
            "iteration": self.iteration,
        }

    def _roll_back(self, what):
        self._rollbacks += 1
        if self._rollbacks > MAX_ROLLBACKS:
            self._save(val_loss=None)
            raise CharrnnError(
                f"training diverged {MAX_ROLLBACKS} times in a row ({what}); lower --lr or set --max-grad-norm "
                f"(the last good state is saved in {self.out})"
            )
        snap = self._snapshot
        for name, value in snap["params"].items():
            self.model.params[name][...] = value
        self.optimizer.load_state_arrays(snap["optim"])
        self.loader.load_state_dict(snap["loader"])
        self.rng.bit_generator.state = snap["rng"]
        self.state = snap["state"].copy()
        self.iteration = snap["iteration"]
        self.optimizer.lr = self.optimizer.lr * 0.5
        self.lr_scale *= 0.5
        self.log(
            f"warning: {what} at iteration {self.iteration + 1}; rolled back to iteration {self.iteration} "
            f"and halved the learning rate to {self.optimizer.lr:.2e}"
        )

    # ------------------------------------------------------------------- evaluate and save
    def _evaluate_and_save(self, train_loss, metrics):
        cfg = self.config
        val_loss = None
        if len(self.splits["val"]) >= 2:
            started = self.clock()
            val_loss = evaluate_loss(self.model, self.splits["val"], cfg.batch_size, cfg.seq_length)["loss_nats"]
            seconds = self.clock() - started
        entry = {
            "iter": self.iteration,
            "epoch": round(self.loader.epoch_fraction, 4),
            "train_loss": None if train_loss is None or math.isnan(train_loss) else round(train_loss, 5),
            "val_loss": None if val_loss is None else round(val_loss, 5),
            "seconds": round(self.train_seconds, 2),
        }
        self.history.append(entry)
        metrics.write(
            json.dumps(
                {"eval": True, **entry, "val_bits_per_char": None if val_loss is None else round(val_loss / LN2, 5)}
            )
            + "\n"
        )
        metrics.flush()
        if val_loss is not None:
            best = "  (best so far)" if val_loss < self.best_val_loss else ""
            self.log(
                f"eval  iter {self.iteration}: val loss {val_loss:.4f} nats/char = {val_loss / LN2:.4f} bits/char "
                f"({seconds:.1f}s){best}"
            )
        self._save(val_loss)
        self._write_sample(val_loss)
        self._draw_loss_curve()
        return val_loss

    def _save(self, val_loss):
        cfg = self.config
        is_best = val_loss is not None and val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss = val_loss
        arrays = {"optim/" + k: v for k, v in self.optimizer.state_arrays().items()}
        arrays["state/train"] = self.state
        meta = {
            "iteration": self.iteration,
            "epoch": self.loader.epoch_fraction,
            "train_config": {k: v for k, v in asdict(cfg).items()},
            "corpus": self.corpus_meta,
            "history": self.history,
            "val_loss": val_loss,
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "train_seconds": self.train_seconds,
            "first_loss": self.first_loss,
            "lr_scale": self.lr_scale,
            "schedule_end": self.schedule_end,
            "unigram": self.unigram,
            "optimizer": self.optimizer.hyper(),
            "loader": self.loader.state_dict(),
            "rng": self.rng.bit_generator.state,
        }
        path = self.out / checkpoint_name(self.iteration, val_loss)
        save_model(path, self.model, self.vocab, meta, arrays)
        update_pointers(self.out, path, val_loss, is_best)
        if cfg.keep_last:
            prune_checkpoints(self.out, cfg.keep_last)
        return path

    def _write_sample(self, val_loss):
        from charrnn.sampling import generate

        cfg = self.config
        seed = cfg.seed * 1_000_003 + self.iteration  # its own stream: sampling never moves the training RNG
        pieces = [
            chunk
            for _, chunk in generate(
                self.model,
                self.vocab,
                cfg.sample_length,
                temperature=cfg.sample_temperature,
                seed=seed,
                start_probs=self.unigram,
            )
        ]
        header = f"iteration {self.iteration}, epoch {self.loader.epoch_fraction:.2f}, "
        header += f"val loss {val_loss:.4f}, " if val_loss is not None else ""
        header += f"temperature {cfg.sample_temperature}, seed {seed}\n" + "-" * 60 + "\n"
        path = self.out / "samples" / f"iter_{self.iteration:06d}.txt"
        path.write_text(header + "".join(pieces) + "\n", encoding="utf-8", errors="replace")

    def _draw_loss_curve(self):
        from charrnn.plots import plot_loss_curve

        curve = []
        path = self.out / "metrics.jsonl"
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                if not record.get("eval"):
                    curve.append({"iter": record["iter"], "train_loss": record["train_loss"]})
        curve.extend({"iter": h["iter"], "val_loss": h["val_loss"]} for h in self.history if h["val_loss"] is not None)
        plot_loss_curve(self.out / "loss.png", curve)

    # ------------------------------------------------------------------------- compilation
    def _warm_up(self):
        """Compiles (or loads from cache) every kernel a run uses, so timing excludes it; loads the
        sampler and the plotting library too, which a time-budgeted cosine's timed evaluation would
        otherwise pay for."""
        import charrnn.plots  # noqa: F401 (matplotlib)
        from charrnn.sampling import generate

        started = self.clock()
        params = {name: value.copy() for name, value in self.model.params.items()}
        scratch = Model(self.model.config, params=params, dtype=np.float32, plan=self.model.plan)
        # The run's own batch size, so the batch is cut into the same slices (and array layouts).
        batch = self.config.batch_size
        ids = np.zeros((batch, 2), dtype=np.int32)
        grads = scratch.zeros_like_params()
        scratch.loss_and_grads(ids, ids, scratch.initial_state(batch), grads, np.random.default_rng(0))
        clip_grad_norm(grads, 1.0)
        clip_grad_value(grads, 5.0)
        make_optimizer(**self.optimizer.hyper(), params=params).step(params, grads)
        list(generate(scratch, self.vocab, 2, seed=0, start_probs=self.unigram))
        return self.clock() - started


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


def run_training(config, resume_from=None, log=print):
    return Trainer(config, resume_from=resume_from, log=log).run()


def default_out_dir(corpus, model, layers, hidden):
    stem = Path(corpus).parent.name if Path(corpus).name == "input.txt" else Path(corpus).stem
    return os.path.join("runs", f"{stem}-{model}-{layers}x{hidden}")
