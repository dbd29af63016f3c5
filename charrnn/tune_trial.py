"""One trial of `charrnn tune`: an ordinary `charrnn train` run in a process of its own, followed
through the metrics.jsonl its run directory holds.

Only the command line and the run directory are relied on: every evaluation appends a record
{"eval": true, "val_loss": ..., "seconds": ...} ("seconds" is the run's training time, what
--max-minutes limits), and every iteration one with "iter" and "seconds". Each val loss is passed to
`report` as it appears; when `should_prune` says so, or the tune is stopped, the run gets SIGINT,
which train answers by saving a checkpoint and exiting, so a pruned or interrupted trial is a
run that `charrnn train --resume` can continue.

The process runs `charrnn train` through child_main, which first asks Linux to send it SIGINT if
the tune dies (PR_SET_PDEATHSIG): a tune killed with -9 leaves no training running on, and its trial's
last checkpoint is saved as on Ctrl-C. It runs in a session of its own, so a Ctrl-C at the terminal
reaches the tune alone, which passes one SIGINT on. Its thread count is its share of the cores,
through the BLAS thread variables that charrnn's thread budget reads (charrnn.parallel.thread_budget).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import CharrnnError

CHILD_CODE = "from charrnn.tune_trial import child_main; child_main()"
PARENT_VARIABLE = "CHARRNN_TUNE_PARENT"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
POLL_SECONDS = 0.25
ALIVE_EVERY_SECONDS = 2.0  # how often `alive` is called while the run goes on
EXIT_GRACE_SECONDS = 60.0  # after SIGINT, time to save a checkpoint before SIGKILL
PR_SET_PDEATHSIG = 1


class TrialFailed(Exception):
    """The run stopped with an error after it had started training (this trial only)."""


class OptionsRefused(CharrnnError):
    """`charrnn train` refused the trial's options before training: every trial would fail alike."""


@dataclass
class TrialOutcome:
    state: str  # "complete", "pruned" or "interrupted"
    evaluations: list = field(default_factory=list)  # (training seconds, val loss)
    iterations: int = 0
    train_seconds: float = 0.0
    returncode: int | None = None

    @property
    def best_val_loss(self):
        return min((loss for _, loss in self.evaluations), default=None)


def child_main():
    """Entry point of a trial's process: `charrnn train ...` that ends (as on Ctrl-C) when the tune dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: the run still ends at its --max-minutes
    parent = os.environ.get(PARENT_VARIABLE)
    if parent and os.getppid() != int(parent):
        sys.exit(130)  # the tune died before the signal was arranged
    # A tune started in the background of a script inherits an ignored SIGINT; train needs it to stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from charrnn.cli import main

    main(sys.argv[1:])


def trial_environment(threads: int) -> dict:
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env[PARENT_VARIABLE] = str(os.getpid())
    return env


class MetricsFollower:
    """The records appended to a metrics.jsonl since the last call (whole lines only)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_records(self):
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def run_trial(args, run_dir, threads, trial_seconds, report, should_prune, stop, alive=None) -> TrialOutcome:
    """Runs `charrnn train ARGS` (ARGS name the corpus, --out run_dir and --max-minutes) to its end.

    report(step, val_loss) is called at each evaluation (step: whole seconds of training, rising);
    should_prune() after it; stop is a threading.Event that interrupts the run; alive() is called
    every few seconds. Raises OptionsRefused or TrialFailed when train fails.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    outcome = TrialOutcome(state="complete")
    follower = MetricsFollower(run_dir / "metrics.jsonl")
    # A run that hangs (a stuck file system, say) is stopped well after any honest one would end.
    deadline = time.monotonic() + 1.5 * trial_seconds + 900
    interrupted_at, last_step, last_alive = None, -1, time.monotonic()
    signalled_at = None  # when train was last sent SIGINT
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD_CODE, "train", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=trial_environment(threads),
            start_new_session=True,
        )
        try:
            while True:
                finished = process.poll() is not None
                polled = time.monotonic()
                for record in follower.new_records():
                    if "seconds" in record:
                        outcome.train_seconds = float(record["seconds"])
                    if not record.get("eval"):
                        outcome.iterations = max(outcome.iterations, int(record.get("iter", 0)))
                        continue
                    if record.get("val_loss") is None:
                        continue
                    if signalled_at is not None and polled - signalled_at > 1.0 and not finished:
                        # Still evaluating, so still training: the signal was lost (Python drops a
                        # KeyboardInterrupt raised inside a finalizer, and one can land there). Ask again.
                        signalled_at = _interrupt(process)
                    seconds, loss = float(record["seconds"]), float(record["val_loss"])
                    outcome.evaluations.append((seconds, loss))
                    last_step = max(int(round(seconds)), last_step + 1)
                    report(last_step, loss)
                    # Near its end a run has nothing left to save by stopping it.
                    if interrupted_at is None and seconds < 0.97 * trial_seconds and should_prune():
                        outcome.state = "pruned"
                        interrupted_at = signalled_at = _interrupt(process)
                if finished:
                    break
                if interrupted_at is None and (stop.is_set() or time.monotonic() > deadline):
                    outcome.state = "interrupted"
                    interrupted_at = signalled_at = _interrupt(process)
                if interrupted_at is not None and time.monotonic() - interrupted_at > EXIT_GRACE_SECONDS:
                    process.kill()
                if alive is not None and time.monotonic() - last_alive >= ALIVE_EVERY_SECONDS:
                    alive()
                    last_alive = time.monotonic()
                time.sleep(POLL_SECONDS)
        finally:
            if process.poll() is None:  # an error here (the storage, say): the run must not go on alone
                _interrupt(process)
                try:
                    process.wait(EXIT_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    outcome.returncode = process.returncode
    if outcome.state == "complete" and process.returncode != 0:
        message = _error_line(log_path) or f"charrnn train exited with status {process.returncode}; see {log_path}"
        if outcome.iterations == 0 and _error_line(log_path):
            raise OptionsRefused(f"charrnn train refused the trial's options: {message}")
        raise TrialFailed(message)
    return outcome


def _interrupt(process) -> float:
    try:
        process.send_signal(signal.SIGINT)
    except ProcessLookupError:
        pass
    return time.monotonic()


def _error_line(log_path: Path) -> str | None:
    """The message of the last 'charrnn: error: ...' line train printed, if any."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("charrnn: error: "):
            return line.removeprefix("charrnn: error: ")
    return None
