"""A training run's directory: everything a run writes, and the checkpoint a resumed run reads.

    ckpt_iter<N>_val<loss>.npz   checkpoints (charrnn.checkpoint's format, charrnn.saved's contents)
    best.json, latest.json       pointers to the best (lowest val loss) and the newest checkpoint
    metrics.jsonl                one JSON object per training iteration and per evaluation ("eval": true)
    loss.png                     the loss curves, redrawn at each evaluation
    samples/iter_<N>.txt         text generated at milestones and evaluations

Every file but metrics.jsonl is replaced whole through charrnn.checkpoint.atomic_write, so a crash,
kill or Ctrl-C leaves the old file or the new one. metrics.jsonl is appended to line by line; a line
torn by a crash is dropped when the run resumes, with the lines the resumed run will write again.

A RunDir told it is not the writer (writer=False: one of several processes training one model)
writes nothing and leaves the directory to the process that is.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from charrnn.checkpoint import (
    POINTER_FILES,
    atomic_write,
    checkpoint_name,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    stale_pointer,
    update_pointers,
    write_file,
)
from charrnn.errors import CharrnnError
from charrnn.saved import save_model

METRICS = "metrics.jsonl"
LOSS_CURVE = "loss.png"
SAMPLES = "samples"


@dataclass
class ResumePoint:
    """A run directory's latest checkpoint, read once: the CLI takes the run's options from it and the
    trainer its model and state."""

    run_dir: Path
    path: Path
    arrays: dict
    meta: dict


def read_resume_point(run_dir, log=print):
    """The latest checkpoint of `run_dir`; when latest.json names a file that is gone, says so and takes
    the newest checkpoint left."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CharrnnError(
            f"--resume takes a run directory, and {run_dir} is not one; pass the --out directory of an earlier run"
        )
    path = resolve_checkpoint(run_dir, which="latest")
    missing = stale_pointer(run_dir, "latest")
    if missing:
        log(
            f"warning: {run_dir / POINTER_FILES['latest']} names {missing}, which is gone; "
            f"resuming from {path.name}, the newest checkpoint left"
        )
    arrays, meta = load_checkpoint(path)
    return ResumePoint(run_dir, path, arrays, meta)


class RunDir:
    def __init__(self, path, continuing=False, writer=True):
        """`continuing`: this run resumes the one in `path`. Anything else refuses a directory that holds
        checkpoints: writing there would move its pointers and let --keep-last delete its checkpoints."""
        self.path = Path(path)
        self.writer = writer
        self._metrics = None
        if not continuing and any(self.path.glob("ckpt_iter*.npz")):
            raise CharrnnError(
                f"{self.path} already holds checkpoints; continue it with --resume {self.path} or pick a new --out"
            )

    def prepare(self):
        """Creates the directory and checks it is writable (a trainer calls this last, so a run refused
        for its corpus, options or checkpoint leaves no empty directory behind)."""
        if not self.writer:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            (self.path / SAMPLES).mkdir(exist_ok=True)
        except OSError as error:
            raise CharrnnError(
                f"cannot write to the output directory {self.path} ({error.strerror}); choose another --out"
            ) from None

    # ------------------------------------------------------------------------------ metrics
    def forget_metrics_after(self, iteration):
        """Drops metrics.jsonl records past `iteration`, and torn lines: resuming from an older
        checkpoint replays those iterations (identically), and the log should hold each once."""
        path = self.path / METRICS
        if not self.writer or not path.is_file():
            return
        lines = list(_records(path))
        kept = [line for line, record in lines if record is not None and record["iter"] <= iteration]
        if len(kept) < len(lines):
            # Durable: the resumed run appends to this log, which must not come back torn after a crash.
            atomic_write(path, lambda out: out.write("".join(kept).encode("utf-8")))

    def log_step(self, record):
        """Appends a training iteration's record; buffered until the next flush or evaluation."""
        if self.writer:
            self._metrics_file().write(json.dumps(record) + "\n")

    def log_evaluation(self, record):
        if self.writer:
            self._metrics_file().write(json.dumps({"eval": True, **record}) + "\n")
            self.flush()

    def flush(self):
        if self._metrics is not None:
            self._metrics.flush()

    def close(self):
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def _metrics_file(self):
        if self._metrics is None:
            self._metrics = open(self.path / METRICS, "a", encoding="utf-8")
        return self._metrics

    # -------------------------------------------------------------------- checkpoints, outputs
    def save_checkpoint(self, model, vocab, meta, arrays, val_loss, is_best, keep_last=0):
        """Writes ckpt_iter<N>[_val<loss>].npz (N = meta["iteration"]), points latest.json (and best.json
        if `is_best`) at it, then keeps only the last `keep_last` besides best and latest (0: all)."""
        if not self.writer:
            return None
        path = self.path / checkpoint_name(meta["iteration"], val_loss)
        save_model(path, model, vocab, meta, arrays)
        update_pointers(self.path, path, val_loss, is_best)
        if keep_last:
            prune_checkpoints(self.path, keep_last)
        return path

    def write_sample(self, iteration, epoch, val_loss, temperature, seed, text):
        """samples/iter_<N>.txt: a line saying where the text comes from, a rule, the text."""
        if not self.writer:
            return None
        header = f"iteration {iteration}, epoch {epoch:.2f}, "
        header += f"val loss {val_loss:.4f}, " if val_loss is not None else ""
        header += f"temperature {temperature}, seed {seed}\n" + "-" * 60 + "\n"
        data = (header + text + "\n").encode("utf-8", errors="replace")
        path = self.path / SAMPLES / f"iter_{iteration:06d}.txt"
        write_file(path, lambda out: out.write(data), what="sample")
        return path

    def draw_loss_curve(self, history):
        """loss.png from metrics.jsonl's training losses and `history`'s validation losses."""
        from charrnn.plots import plot_loss_curve

        if not self.writer:
            return
        self.flush()
        curve = [
            {"iter": record["iter"], "train_loss": record["train_loss"]}
            for _, record in _records(self.path / METRICS)
            if record is not None and not record.get("eval")
        ]
        curve.extend({"iter": h["iter"], "val_loss": h["val_loss"]} for h in history if h["val_loss"] is not None)
        plot_loss_curve(self.path / LOSS_CURVE, curve)


def _records(path):
    """(line, record) for each line of a metrics file; record None for a line torn by a crash."""
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line) if line.endswith("\n") else None
                if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
                    record = None
            except ValueError:
                record = None
            yield line, record
