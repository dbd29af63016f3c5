"""The report of a study: leaderboard order, the best trial as a train command, best.json, the picture."""

import json
import shlex
import socket

import pytest

optuna = pytest.importorskip("optuna", reason="charrnn tune needs the tune extra: pip install -e '.[tune]'")

from charrnn.tune_report import best_row, leaderboard, train_command, trial_rows, write_report  # noqa: E402

HIDDEN = optuna.distributions.CategoricalDistribution([128, 256])
LR = optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)


def add(study, number_hint, state, losses, hidden, lr, run_dir, train_seconds=None):
    """A trial as charrnn.tune records one: its params, its losses by seconds of training, its attributes."""
    state = getattr(optuna.trial.TrialState, state)
    args = ["--hidden", str(hidden), "--lr", f"{lr:.4g}", "--out", str(run_dir), "--max-minutes", "3"]
    attrs = {"train_args": args, "run_dir": str(run_dir), "host": socket.gethostname()}
    if train_seconds is not None:
        attrs["train_seconds"] = train_seconds
    if losses:
        attrs["best_val_loss"] = min(losses.values())
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=min(losses.values()) if state == optuna.trial.TrialState.COMPLETE else None,
            params={"hidden": hidden, "lr": lr},
            distributions={"hidden": HIDDEN, "lr": LR},
            user_attrs=attrs,
            intermediate_values=losses,
        )
    )


@pytest.fixture
def study(tmp_path):
    study = optuna.create_study(study_name="report-test")
    add(study, 0, "COMPLETE", {30: 2.0, 90: 1.7, 180: 1.62}, 128, 0.003, tmp_path / "trial-0000", 180.0)
    add(study, 1, "PRUNED", {30: 2.4, 45: 2.3}, 256, 0.009, tmp_path / "trial-0001", 45.5)
    add(study, 2, "COMPLETE", {30: 1.9, 90: 1.6, 180: 1.55}, 256, 0.004, tmp_path / "trial-0002", 179.0)
    add(study, 3, "FAIL", {}, 128, 0.001, tmp_path / "trial-0003", 0.0)
    # A pruned trial can have a lower loss than a finished one at its stop, but is never "the best".
    add(study, 4, "PRUNED", {30: 1.5}, 128, 0.005, tmp_path / "trial-0004", 30.0)
    return study


def test_rows_best_first_and_the_best_ran_its_whole_time(study):
    rows = trial_rows(study)
    assert [row["trial"] for row in rows] == [4, 2, 0, 1, 3]
    assert best_row(rows)["trial"] == 2
    two = rows[1]
    assert two["val_loss"] == 1.55 and two["at_minutes"] == 3.0 and two["minutes"] == pytest.approx(179 / 60)
    assert two["points"] == [(0.5, 1.9), (1.5, 1.6), (3.0, 1.55)]


def test_leaderboard_lines(study):
    lines = leaderboard(trial_rows(study)).splitlines()
    assert lines[0].split() == ["trial", "state", "val", "loss", "at", "min", "minutes", "options"]
    assert lines[2].split() == ["2", "complete", "1.5500", "3.0", "3.0", "hidden", "256", "lr", "0.004"]
    assert lines[5].split()[:5] == ["3", "fail", "-", "-", "0.0"]
    short = leaderboard(trial_rows(study), limit=2).splitlines()
    assert len(short) == 4 and "and 3 more" in short[-1]


def test_the_best_trial_as_a_train_command(study, tmp_path):
    command = train_command(best_row(trial_rows(study)), "data/input.txt", "runs/tuned")
    assert shlex.split(command) == [
        "charrnn", "train", "data/input.txt", "--hidden", "256", "--lr", "0.004", "--max-minutes", "3",
        "--out", "runs/tuned",
    ]  # fmt: skip


def test_write_report(study, tmp_path):
    run = tmp_path / "trial-0002"
    run.mkdir()
    (run / "ckpt_iter000900_val1.5500.npz").write_bytes(b"")  # only its name is read here
    (run / "best.json").write_text(json.dumps({"file": "ckpt_iter000900_val1.5500.npz"}), encoding="utf-8")
    lines = []
    summary = write_report(study, tmp_path / "study", "data/tinyshakespeare/input.txt", log=lines.append)
    written = json.loads((tmp_path / "study" / "best.json").read_text())
    assert written == summary
    assert summary["trial"] == 2 and summary["val_loss"] == 1.55 and summary["params"] == {"hidden": 256, "lr": 0.004}
    assert summary["checkpoint"] == str(run / "ckpt_iter000900_val1.5500.npz")
    assert summary["train_command"].endswith("--out runs/tinyshakespeare-tuned")
    assert f"  {summary['train_command']}" in lines
    assert (tmp_path / "study" / "val_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_a_study_without_a_finished_trial_has_no_best(tmp_path):
    study = optuna.create_study()
    add(study, 0, "PRUNED", {30: 2.4}, 256, 0.009, tmp_path / "trial-0000", 30.0)
    lines = []
    assert write_report(study, tmp_path / "study", "corpus.txt", log=lines.append) is None
    assert "no trial has run its whole time yet" in lines[-1]
    assert not (tmp_path / "study" / "best.json").exists() and (tmp_path / "study" / "val_loss.png").exists()
