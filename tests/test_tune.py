"""`charrnn tune` end to end: real `charrnn train` trials (tiny models, seconds each), a real SQLite
study killed with -9 and continued, a real PostgreSQL server shared by two tune processes."""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_runner import run_main
from conftest import synthetic_text

optuna = pytest.importorskip("optuna", reason="charrnn tune needs the tune extra: pip install -e '.[tune]'")

from charrnn.tune import expected_trial_seconds, spent_seconds  # noqa: E402 (after the skip: it is only useful with optuna)

TRIAL_MINUTES = "0.1"  # 6 seconds of training a trial
# A tiny model on a tiny corpus: the space searches the learning rate only, between one that learns
# and one that cannot, so a pruner has something to tell apart.
SPACE = """
[hidden]
value = 16
[layers]
value = 1
[lr]
choices = [0.01, 0.00001]
"""
# No epoch limit: on a quiet machine 50 epochs of this corpus take less than a trial's time.
FIXED = ("--", "--batch-size", "10", "--seq-length", "20", "--print-every", "50", "--max-epochs", "0")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "corpus.txt"
    path.write_text(synthetic_text(20000), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def space(corpus):
    path = corpus.parent / "space.toml"
    path.write_text(SPACE, encoding="utf-8")
    return path


def tune_args(corpus, space, out, *extra, minutes=TRIAL_MINUTES):
    return ["tune", corpus, "--trial-minutes", minutes, "--space", space, "--out", out, *extra, *FIXED]


def load(out, name="corpus-0.1min", storage=None):
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{out}/study.db")


@pytest.fixture(scope="module")
def pruned_study(corpus, space, tmp_path_factory):
    """A finished study of three trials in which the pruner stopped at least one."""
    out = tmp_path_factory.mktemp("pruned") / "study"
    # A process of its own (module fixtures have no capsys for run_main).
    extra = ("--minutes", "5", "--trials", "3", "--sampler", "random", "--seed", "0")
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", *map(str, tune_args(corpus, space, out, *extra))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_pruning_stops_a_trial_early(pruned_study):
    out, log = pruned_study
    trials = load(out).trials
    assert len(trials) == 3
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and complete, log
    for trial in pruned:
        run = Path(trial.user_attrs["run_dir"])
        # Stopped by SIGINT well before its 6 seconds, with the checkpoint train saves on Ctrl-C.
        assert trial.user_attrs["train_seconds"] < 0.8 * 6
        assert "interrupted: saving a checkpoint" in (run / "train.log").read_text()
        latest = json.loads((run / "latest.json").read_text())
        assert (run / latest["file"]).is_file()
        assert f"trial {trial.number} pruned at" in log
        # It was worse, where it stopped, than a trial that went on.
        step = max(trial.intermediate_values)
        others = [t.intermediate_values for t in complete]
        assert any(
            min(v for s, v in values.items() if s <= step + 1) < trial.intermediate_values[step] for values in others
        )
    for trial in complete:
        assert trial.user_attrs["train_seconds"] >= 0.9 * 6
        assert "stopped (reached --max-minutes 0.1)" in (Path(trial.user_attrs["run_dir"]) / "train.log").read_text()
        assert trial.value == pytest.approx(min(trial.intermediate_values.values()))


def test_report_on_a_finished_study(pruned_study, capsys):
    out, _ = pruned_study
    (out / "best.json").unlink()
    (out / "val_loss.png").unlink()
    code, stdout, err = run_main(capsys, "tune", out, "--report")
    assert code == 0, err
    study = load(out)
    best = study.best_trial
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["trial", "state", "val"]
    assert lines[1].split()[:3] == [str(best.number), "complete", f"{best.value:.4f}"]
    assert sum(1 for line in lines[1:4] if line.split()[1] in ("complete", "pruned")) == 3
    summary = json.loads((out / "best.json").read_text())
    assert summary["trial"] == best.number and summary["val_loss"] == pytest.approx(best.value)
    assert Path(summary["checkpoint"]).is_file() and Path(summary["checkpoint"]).parent == Path(summary["run_dir"])
    assert summary["train_command"].startswith("charrnn train ") and "--lr 0.01" in summary["train_command"]
    assert summary["train_command"] in stdout
    assert (out / "val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _processes_running(fragment):
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if fragment in Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(cmdline)
        except OSError:
            pass
    return found


def _wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the trial's process")
def test_sqlite_study_continues_after_kill_9(corpus, space, tmp_path, capsys):
    out = tmp_path / "study"
    args = [str(a) for a in tune_args(corpus, space, out, "--minutes", "0.35")]
    first = subprocess.Popen([sys.executable, "-m", "charrnn", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_dir = out / "trials" / "trial-0000"
    try:
        _wait_for(lambda: b'"eval": true' in _read(run_dir / "metrics.jsonl"), 120, "the first trial's evaluation")
        time.sleep(2.5)  # long enough for the trial to be seen alive once more
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    # The trial's train process got SIGINT when the tune died: it saves a checkpoint and ends.
    _wait_for(lambda: not _processes_running(str(run_dir)), 60, "the orphaned trial to stop")
    assert "interrupted: saving a checkpoint" in (run_dir / "train.log").read_text()
    assert (run_dir / json.loads((run_dir / "latest.json").read_text())["file"]).is_file()
    killed = load(out).trials
    assert [t.state.name for t in killed] == ["RUNNING"]
    spent_before = spent_seconds(killed)
    assert spent_before >= 2.0

    code, stdout, err = run_main(capsys, *args)
    assert code == 0, err
    assert "trial 0 was left running by a tune that died; marked failed" in stdout
    assert f"({spent_before / 60:.2f} min already spent)" in stdout
    trials = load(out).trials
    assert trials[0].state.name == "FAIL"
    assert len(trials) >= 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials[1:])
    # The budget counts the killed trial: each later trial started only while what was left held a
    # whole trial (the median of finished ones), and the tune stopped once it did not; so only the
    # last trial may run past the budget, by as much as it took longer than that median. (A fixed
    # margin of 3 s past the budget failed once in CI, by 16 ms.)
    budget, first_guess = 0.35 * 60, float(TRIAL_MINUTES) * 60
    for k in range(1, len(trials)):
        expected = expected_trial_seconds(trials[:k], first_guess)
        assert spent_seconds(trials[:k]) + expected <= budget + 0.5, f"trial {k} started with too little time left"
    assert spent_seconds(trials) + expected_trial_seconds(trials, first_guess) > budget, "the tune stopped early"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the trial's process")
def test_ctrl_c_stops_the_running_trial_with_a_checkpoint(corpus, space, tmp_path):
    out = tmp_path / "study"
    args = [str(a) for a in tune_args(corpus, space, out, "--minutes", "5")]
    tune = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_dir = out / "trials" / "trial-0000"
    try:
        _wait_for(lambda: b'"eval": true' in _read(run_dir / "metrics.jsonl"), 120, "the first trial's evaluation")
        tune.send_signal(
            signal.SIGINT
        )  # what a Ctrl-C at the terminal sends the tune (its trials have their own session)
        stdout, stderr = tune.communicate(timeout=60)
    finally:
        if tune.poll() is None:
            tune.kill()
    assert tune.returncode == 130 and "Traceback" not in stdout + stderr, stdout + stderr
    assert not _processes_running(str(run_dir))
    assert "interrupted: saving a checkpoint" in (run_dir / "train.log").read_text()
    assert (run_dir / json.loads((run_dir / "latest.json").read_text())["file"]).is_file()
    assert [t.state.name for t in load(out).trials] == ["FAIL"]
    lines = stdout.splitlines()
    # The summary comes once the trial has stopped, and counts it as failed.
    assert (
        lines.index("interrupted: stopping 1 running trial(s); each saves a checkpoint")
        < next(k for k, line in enumerate(lines) if line.startswith("trial 0 interrupted at"))
        < next(k for k, line in enumerate(lines) if line.startswith("study corpus-0.1min: "))
    )
    assert "1 trial(s): 1 fail" in stdout


def _read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def test_two_workers_on_one_machine_split_the_cores(corpus, space, tmp_path, capsys):
    out = tmp_path / "study"
    args = tune_args(corpus, space, out, "--minutes", "3", "--trials", "2", "--workers", "2", minutes="0.05")
    code, stdout, err = run_main(capsys, *args)
    assert code == 0, err
    trials = load(out, "corpus-0.05min").trials
    assert len(trials) == 2
    first, second = sorted(trials, key=lambda t: t.user_attrs["started_at"])
    assert second.user_attrs["started_at"] < first.user_attrs["ended_at"]  # they ran at once
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for trial in trials:
        assert trial.user_attrs["threads"] == threads
        header = (Path(trial.user_attrs["run_dir"]) / "train.log").read_text().splitlines()[0]
        assert ("one thread" in header) if threads == 1 else (f"{threads} threads" in header), header


# ---------------------------------------------------------------------------------------- PostgreSQL
def _program(name, *folders):
    """`name` on PATH, else in the last match of the first folder pattern that has it (None: nowhere)."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in folders:
        matches = sorted(glob.glob(os.path.join(pattern, name)))
        if matches:
            return matches[-1]
    return None


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own in a temporary directory; initdb refuses root, so as root it runs as
    the unprivileged user postgres (.ci/run makes sure there is one)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver comes with the tune extra: pip install -e '.[tune]'")
    initdb, pg_ctl = (_program(name, "/usr/lib/postgresql/*/bin") for name in ("initdb", "pg_ctl"))
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)")
    as_user = []
    base = Path(tempfile.mkdtemp(prefix="charrnn-pg-"))
    if os.geteuid() == 0:
        user = os.environ.get("CHARRNN_PG_USER", "postgres")
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.fail(f"running as root needs an unprivileged user {user} for PostgreSQL (useradd --system {user})")
        runuser = _program("runuser", "/usr/sbin", "/sbin")  # root's PATH may leave out the sbin folders
        if runuser is None:
            pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL as an unprivileged user")
        as_user = [runuser, "-u", user, "--"]
        shutil.chown(base, user)
    port = _free_port()
    data = base / "data"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", data, "-A", "trust", "-U", "charrnn", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*as_user, pg_ctl, "-D", data, "-o", options, "-l", base / "log", "-w", "start"], check=True,
                       capture_output=True)  # fmt: skip
        yield f"postgresql://charrnn@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(corpus, space, tmp_path, postgres_url):
    wanted = 3
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    common = ["--storage", postgres_url, "--study", "shared", "--minutes", "5", "--trials", str(wanted)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "charrnn", *map(str, tune_args(corpus, space, out, *common, minutes="0.05"))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in outs
    ]
    logs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log
    trials = load(None, "shared", postgres_url).trials
    # Two workers racing for the last place may both take it: one trial more, never a repeat.
    assert wanted <= len(trials) <= wanted + 1
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    ran = [{int(p.name.removeprefix("trial-")) for p in (out / "trials").iterdir()} for out in outs]
    assert ran[0] and ran[1], logs  # both machines worked
    assert not ran[0] & ran[1] and ran[0] | ran[1] == {t.number for t in trials}
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.parent.parent in outs and (run_dir / "metrics.jsonl").is_file()
        assert f"trial {trial.number} started" in logs[outs.index(run_dir.parent.parent)]


# ------------------------------------------------------------------------------------------ mistakes
def one_line_error(capsys, *args):
    code, out, err = run_main(capsys, *args)
    assert code == 1 and "Traceback" not in out + err
    assert err.count("\n") == 1 and err.startswith("charrnn: error: "), err
    return err


@pytest.mark.parametrize(
    "text, name, phrase",
    [
        ("[hidden\nchoices = [1]", "space.toml", "is not valid TOML"),
        ('{"hidden": {"choices": [16]', "space.json", "is not valid JSON"),
        ("[hiden]\nchoices = [16]", "space.toml", "--hiden is not a charrnn train option"),
        ("[model]\nchoices = ['lstm', 'transformer']", "space.toml", "'transformer' is not one of"),
        ("[lr]\nlow = 0.01\nhigh = 0.001", "space.toml", "low 0.01 must be below high 0.001"),
        ("[max_minutes]\nvalue = 3", "space.toml", "--max-minutes is set by charrnn tune"),
    ],
)
def test_a_bad_space_file_is_one_line(capsys, corpus, tmp_path, text, name, phrase):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    err = one_line_error(capsys, "tune", corpus, "--minutes", "1", "--trial-minutes", "1", "--space", path, "--out",
                         tmp_path / "s")  # fmt: skip
    assert phrase in err and str(path) in err


def test_an_unreachable_storage_is_one_line(capsys, corpus, tmp_path):
    url = f"postgresql://someone:secret@127.0.0.1:{_free_port()}/nothing"
    err = one_line_error(capsys, "tune", corpus, "--minutes", "1", "--trial-minutes", "1", "--storage", url, "--out",
                         tmp_path / "s")  # fmt: skip
    assert "cannot open the study storage postgresql://someone:***@127.0.0.1" in err and "secret" not in err


def test_a_budget_smaller_than_one_trial_is_one_line(capsys, corpus, tmp_path):
    err = one_line_error(capsys, "tune", corpus, "--minutes", "2", "--trial-minutes", "3", "--out", tmp_path / "s")
    assert "--minutes 2 is less than one trial of --trial-minutes 3" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "fixed, phrase",
    [
        (("--", "--hiden", "16"), "No such option '--hiden'"),
        (("--", "--dropout", "lots"), "'lots' is not a valid float"),
        (("--", "--max-minutes", "2"), "--max-minutes is set by charrnn tune for each trial; use its --trial-minutes"),
    ],
)
def test_bad_fixed_train_options_are_one_line(capsys, corpus, tmp_path, fixed, phrase):
    err = one_line_error(
        capsys, "tune", corpus, "--minutes", "1", "--trial-minutes", "1", "--out", tmp_path / "s", *fixed
    )
    assert phrase in err


def test_a_value_train_refuses_stops_the_tune(capsys, corpus, tmp_path):
    """Train's own validation has the last word: a trial whose options it refuses ends the tune at once."""
    space = tmp_path / "space.toml"
    space.write_text("[hidden]\nvalue = 16\n[dropout]\nvalue = 1.5\n", encoding="utf-8")
    code, out, err = run_main(capsys, *tune_args(corpus, space, tmp_path / "s", "--minutes", "1"))
    assert code == 1 and "Traceback" not in out + err
    assert (
        err
        == "charrnn: error: trial 0: charrnn train refused the trial's options: --dropout must be in [0, 1), got 1.5\n"
    )
    assert [t.state.name for t in load(tmp_path / "s").trials] == ["FAIL"]


def test_without_optuna_it_says_how_to_install(capsys, corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an environment without the extra imports
    err = one_line_error(capsys, "tune", corpus, "--minutes", "1", "--trial-minutes", "1", "--out", tmp_path / "s")
    assert err == "charrnn: error: charrnn tune needs the tune extra: pip install -e '.[tune]'\n"
