"""`charrnn train`'s options (TrainConfig), checked once, and where a run goes by default.

A checkpoint records them as "train_config" (charrnn.saved); a resumed run starts from those, with
the options given again on its command line on top, except FIXED_ON_RESUME.
"""

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from charrnn.errors import CharrnnError
from charrnn.plan import SPLITS


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

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def default_out_dir(corpus, model, layers, hidden):
    stem = Path(corpus).parent.name if Path(corpus).name == "input.txt" else Path(corpus).stem
    return os.path.join("runs", f"{stem}-{model}-{layers}x{hidden}")
