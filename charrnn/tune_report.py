"""What a study found: a leaderboard, val loss against minutes for every trial (val_loss.png), the best
trial's options as a `charrnn train` command line, and best.json pointing at its run.

Everything comes from the study's storage (the losses each trial reported, with their seconds of
training as steps, and the user attributes charrnn.tune records), so a study shared by several
machines reports the same on each; only best.json's checkpoint is looked up in the run directory,
when it is on this machine.
"""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path

from charrnn.checkpoint import atomic_write, resolve_checkpoint
from charrnn.errors import CharrnnError
from charrnn.tune_space import describe_options

BEST_FILE = "best.json"
PLOT_FILE = "val_loss.png"
LEADERBOARD_ROWS = 25


def trial_rows(study) -> list[dict]:
    """One dict per trial charrnn ran, the best first (trials without a val loss last)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if "train_args" not in attrs:
            continue  # not one of charrnn's (enqueued by hand, or never started)
        points = [(step / 60, value) for step, value in sorted(trial.intermediate_values.items())]
        losses = [value for _, value in points]
        best = attrs.get("best_val_loss", min(losses, default=None))
        at = next((minutes for minutes, value in points if value == best), None)
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "val_loss": best,
                "at_minutes": at,
                "minutes": attrs.get("train_seconds", points[-1][0] * 60 if points else 0.0) / 60,
                "params": dict(trial.params),
                "points": points,
                "train_args": list(attrs["train_args"]),
                "run_dir": attrs.get("run_dir"),
                "host": attrs.get("host"),
                "error": attrs.get("error"),
            }
        )
    rows.sort(key=lambda row: (row["val_loss"] is None, row["val_loss"] or 0.0, row["trial"]))
    return rows


def best_row(rows):
    """The best trial that ran its whole time (Optuna's best trial); None before any did."""
    return next((row for row in rows if row["state"] == "complete" and row["val_loss"] is not None), None)


def leaderboard(rows, limit=LEADERBOARD_ROWS) -> str:
    lines = [f"{'trial':>5}  {'state':<9} {'val loss':>8} {'at min':>6} {'minutes':>7}  options"]
    places = 2 if max(row["minutes"] for row in rows) < 1 else 1  # short trials (tests) need the second
    for row in rows[:limit]:
        loss = f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "-"
        at = f"{row['at_minutes']:.{places}f}" if row["at_minutes"] is not None else "-"
        options = describe_options(row["params"]) or "(fixed options only)"
        lines.append(f"{row['trial']:>5}  {row['state']:<9} {loss:>8} {at:>6} {row['minutes']:>7.{places}f}  {options}")
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more (all of them: optuna-dashboard, or best.json for the best)")
    return "\n".join(lines)


def train_command(row, corpus, out) -> str:
    """The best trial as a `charrnn train` command line (its own --out replaced by `out`)."""
    args, kept = row["train_args"], []
    skip = False
    for token in args:
        if skip:
            skip = False
            continue
        if token == "--out":
            skip = True
            continue
        kept.append(token)
    return shlex.join(["charrnn", "train", str(corpus), *kept, "--out", str(out)])


def write_report(study, study_dir, corpus, log=print) -> dict | None:
    """Prints the leaderboard and the best command; writes val_loss.png and best.json. Returns best.json's content."""
    from charrnn.plots import plot_tune_curves

    study_dir = Path(study_dir)
    rows = trial_rows(study)
    if not rows:
        log(f"study {study.study_name} has no trials yet")
        return None
    log(leaderboard(rows))
    best = best_row(rows)
    curves = [row for row in rows if row["points"]]
    if curves:
        plot_tune_curves(study_dir / PLOT_FILE, curves, best=best["trial"] if best else None)
        log(f"wrote {study_dir / PLOT_FILE}  (val loss against minutes of training, every trial)")
    if best is None:
        log("no trial has run its whole time yet: no best trial")
        return None
    stem = Path(corpus).parent.name if Path(corpus).name == "input.txt" else Path(corpus).stem
    command = train_command(best, corpus, Path("runs") / f"{stem}-tuned")
    summary = {
        "study": study.study_name,
        "trial": best["trial"],
        "val_loss": best["val_loss"],
        "minutes": best["minutes"],
        "params": best["params"],
        "run_dir": best["run_dir"],
        "host": best["host"],
        "checkpoint": _best_checkpoint(best),
        "train_command": command,
    }
    atomic_write(study_dir / BEST_FILE, lambda out: out.write((json.dumps(summary, indent=2) + "\n").encode()))
    log(f"best: trial {best['trial']}, val {best['val_loss']:.4f} nats/char, run {best['run_dir']}")
    log(f"wrote {study_dir / BEST_FILE}; to train it again:")
    log(f"  {command}")
    return summary


def _best_checkpoint(row):
    if not row["run_dir"] or row["host"] not in (None, socket.gethostname()):
        return None  # another machine's run: its path means nothing here
    try:
        return str(resolve_checkpoint(row["run_dir"], which="best"))
    except (CharrnnError, OSError):
        return None
