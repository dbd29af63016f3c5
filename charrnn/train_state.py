"""What a training run changes as it goes, besides the weights, and how it becomes checkpoint metadata
and arrays and back: charrnn.saved documents those keys, this is what writes and reads them.

Everything a resume needs is here (the data position, the dropout RNG, the optimizer's moments, the
hidden state carried between windows, the divergence scale, a fitted schedule's end), so N iterations
+ resume + N more equals 2N straight, bit for bit. A Snapshot is the smaller copy a divergence rolls
back to.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from charrnn.data import BatchLoader
from charrnn.errors import CharrnnError
from charrnn.optim import Optimizer, make_optimizer
from charrnn.saved import CARRIED, OPTIM


@dataclass
class Snapshot:
    """A point a divergence rolls back to: weights, optimizer state, data position, RNG, carried state."""

    iteration: int
    params: dict
    optimizer: dict
    loader: dict
    rng: dict
    carried: np.ndarray


@dataclass
class TrainState:
    optimizer: Optimizer
    loader: BatchLoader  # its position is the state: where the next window starts
    rng: np.random.Generator  # dropout and DropConnect masks
    carried: np.ndarray  # hidden state carried into the next window, (2, L, B, H)
    iteration: int = 0  # updates applied
    history: list = field(default_factory=list)  # evaluations: {"iter", "epoch", "train_loss", "val_loss", "seconds"}
    best_val_loss: float = math.inf
    train_seconds: float = 0.0  # training time over every session, compilation excluded
    first_loss: float | None = None  # a loss far above it counts as a divergence
    lr_scale: float = 1.0  # halved at each divergence; the schedule is multiplied by it
    schedule_end: int | None = None  # where a time-budgeted cosine ends, once measured

    @classmethod
    def start(cls, config, model, loader):
        """A fresh run's state: nothing done, the optimizer's moments at zero, the RNG seeded by --seed."""
        hyper = {"weight_decay": config.weight_decay} if config.optimizer == "adam" else {}
        optimizer = make_optimizer(config.optimizer, model.params, config.lr, **hyper)
        carried = model.initial_state(config.batch_size)
        return cls(optimizer, loader, np.random.default_rng(config.seed), carried)

    @property
    def epoch(self):
        return self.loader.epoch_fraction

    # -------------------------------------------------------------------------- checkpoints
    def to_checkpoint(self, val_loss):
        """(meta, arrays) of this state for a checkpoint whose validation loss is `val_loss` (None: none)."""
        meta = {
            "iteration": self.iteration,
            "epoch": self.loader.epoch_fraction,
            "history": self.history,
            "val_loss": val_loss,
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "train_seconds": self.train_seconds,
            "first_loss": self.first_loss,
            "lr_scale": self.lr_scale,
            "schedule_end": self.schedule_end,
            "optimizer": self.optimizer.hyper(),
            "loader": self.loader.state_dict(),
            "rng": self.rng.bit_generator.state,
        }
        arrays = {OPTIM + key: value for key, value in self.optimizer.state_arrays().items()}
        arrays[CARRIED] = self.carried
        return meta, arrays

    @classmethod
    def from_checkpoint(cls, arrays, meta, model, loader, batch_size, source):
        """The state a checkpoint (from `source`) recorded, for `model` (the checkpoint's own weights) and
        a `loader` over the same training text; anything missing or malformed is a CharrnnError."""
        rng = np.random.default_rng(0)  # its state is the checkpoint's, set below
        try:
            optimizer = make_optimizer(**meta["optimizer"], params=model.params)
            optimizer.load_state_arrays({k[len(OPTIM) :]: v for k, v in arrays.items() if k.startswith(OPTIM)})
            rng.bit_generator.state = meta["rng"]
            loader.load_state_dict(meta["loader"])
            first_loss, schedule_end = meta.get("first_loss"), meta.get("schedule_end")
            state = cls(
                optimizer,
                loader,
                rng,
                carried=np.ascontiguousarray(arrays[CARRIED], dtype=np.float32),
                iteration=int(meta["iteration"]),
                history=[dict(entry) for entry in meta.get("history", [])],
                best_val_loss=float(meta.get("best_val_loss") or math.inf),
                train_seconds=float(meta.get("train_seconds", 0.0)),
                first_loss=None if first_loss is None else float(first_loss),
                lr_scale=float(meta.get("lr_scale", 1.0)),
                schedule_end=None if schedule_end is None else int(schedule_end),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CharrnnError(
                f"{source} is a model-only or damaged checkpoint and cannot resume training ({error}); "
                "resume from another checkpoint or start a new run"
            ) from None
        if state.carried.shape != model.initial_state(batch_size).shape:
            raise CharrnnError("the checkpoint's carried state does not fit this batch size; start a new run")
        return state

    def note_val_loss(self, val_loss):
        """True when `val_loss` is the best so far (it then becomes best_val_loss)."""
        if val_loss is None or not val_loss < self.best_val_loss:
            return False
        self.best_val_loss = val_loss
        return True

    # ---------------------------------------------------------------------------- rollback
    def snapshot(self, params):
        return Snapshot(
            self.iteration,
            {name: value.copy() for name, value in params.items()},
            self.optimizer.state_arrays(),
            self.loader.state_dict(),
            self.rng.bit_generator.state,
            self.carried.copy(),
        )

    def roll_back(self, snapshot, params):
        """Back to `snapshot`, weights (in place) included; lr_scale and the records stay as they are."""
        for name, value in snapshot.params.items():
            params[name][...] = value
        self.optimizer.load_state_arrays(snapshot.optimizer)
        self.loader.load_state_dict(snapshot.loader)
        self.rng.bit_generator.state = snapshot.rng
        self.carried = snapshot.carried.copy()
        self.iteration = snapshot.iteration

    @contextmanager
    def undone_on_error(self):
        """An exception inside the block (a Ctrl-C the kernels raised, a failure) puts back the data
        position and RNG it moved, so a checkpoint saved after it resumes with this very iteration.
        (The block changes the rest of the state only once nothing can fail any more.)"""
        loader, rng = self.loader.state_dict(), self.rng.bit_generator.state
        try:
            yield
        except BaseException:
            self.loader.load_state_dict(loader)
            self.rng.bit_generator.state = rng
            raise


def check_resumable(meta, config, corpus_record, expected, found):
    """Refuses a checkpoint that this run's options and corpus cannot continue: another value of a
    TrainConfig.FIXED_ON_RESUME option, another corpus file, or another model or vocabulary
    (`found`, the checkpoint's (vocab, ModelConfig), against `expected`, this run's)."""
    saved = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    for name in config.FIXED_ON_RESUME:
        if name in saved and saved[name] != getattr(config, name):
            flag = "--" + name.replace("_", "-")
            raise CharrnnError(
                f"the checkpoint was trained with {flag} {saved[name]} but this run asks for "
                f"{getattr(config, name)}; drop {flag} to resume, or start a new run"
            )
    recorded_corpus = meta.get("corpus") if isinstance(meta.get("corpus"), dict) else {}
    recorded = recorded_corpus.get("sha256")
    if recorded and recorded != corpus_record["sha256"]:
        raise CharrnnError(
            f"the checkpoint was trained on another corpus ({recorded_corpus.get('path')}); "
            "resume with that file or start a new run"
        )
    if found != expected:
        raise CharrnnError(
            "the checkpoint's model or vocabulary does not match this corpus and these options; start a new run"
        )
