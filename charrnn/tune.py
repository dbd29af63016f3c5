"""`charrnn tune`: an Optuna study whose trials are `charrnn train` runs, within a budget of time.

The study directory (--out) holds
    tune.json       which study this is and where it is stored (so `--report STUDY_DIR` finds it)
    study.db        the SQLite storage, unless --storage names another database
    space.json      the search space the study was created with (a --space file in the list form)
    trials/trial-NNNN/   each trial's ordinary `charrnn train` run directory, with its train.log
    locks/          one lock per running trial, held by the tune process that runs it
    best.json, val_loss.png   written at the end and by --report (charrnn.tune_report)

Time. --minutes is the study's budget: the wall-clock time during which any of its trials ran, over
every session of the study and every worker of it (trials overlap, so N workers share one clock);
a trial starts only while the time left holds a whole one (the median wall time of finished trials,
compile time and evaluations included; --trial-minutes before the first). Each trial records when
it started, when it was last seen alive (every few seconds) and when it ended, in its user
attributes, so a tune killed with -9 and started again counts what its trials had spent.

Kill and continue. A trial whose tune died stays RUNNING in the storage until someone notices: a tune
on the same machine and study directory sees the trial's lock free and marks it FAIL at once;
elsewhere Optuna's heartbeat does it (RDBStorage heartbeat_interval/grace_period; each trial start
calls optuna.storages.fail_stale_trials). Its run directory keeps the checkpoint saved when its
train process got SIGINT on the tune's death (charrnn.tune_trial).

Workers. --workers N runs N trials at once in this process, each train process given its share of
the cores. Tunes on several machines join one study through --storage (PostgreSQL, MySQL...):
each asks Optuna for the next trial, so none is repeated, and each keeps its trials' run directories
in its own --out.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import statistics
import threading
import time
import warnings
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from charrnn.checkpoint import atomic_write
from charrnn.errors import CharrnnError
from charrnn.tune_space import (
    TUNE_MANAGED,
    baseline,
    check_space,
    default_space,
    describe_options,
    describe_space,
    format_value,
    option_flag,
    read_space_file,
    seconds_per_char,
    suggest,
    values_to_check,
)
from charrnn.tune_storage import (
    import_optuna,
    masked_url,
    open_storage,
    storage_url,
    write_manifest,
)
from charrnn.tune_trial import OptionsRefused, TrialFailed, run_trial

SPACE_FILE = "space.json"
TRIALS_DIR = "trials"
LOCKS_DIR = "locks"
ATTRIBUTE = "charrnn"  # the study's user attribute holding what it was created with
EVALS_PER_TRIAL = 8  # evaluations a trial aims for: the points its pruner looks at
EVAL_FIXED_SECONDS = 0.3  # an evaluation's checkpoint, sample and loss curve, besides the validation pass
STARTUP_TRIALS = 8  # random trials before TPE models the results
MAX_FAILURES_IN_A_ROW = 3
COUNTED_STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # what --trials counts (failures do not)


@dataclass
class TuneConfig:
    corpus: str
    minutes: float
    trial_minutes: float
    out: str
    storage: str | None = None  # None: sqlite in the study directory
    study: str | None = None
    space_file: str | None = None
    workers: int = 1
    trials: int = 0  # 0: no limit but time
    sampler: str = "tpe"
    pruner: str = "halving"
    seed: int | None = None
    train_args: tuple = ()


class TuneInterrupted(Exception):
    """The tune was asked to stop (Ctrl-C, SIGTERM) while this trial ran."""


def default_study_dir(corpus) -> str:
    path = Path(corpus)
    stem = path.parent.name if path.name == "input.txt" else path.stem
    return os.path.join("runs", f"tune-{stem}")


def default_study_name(corpus, trial_minutes) -> str:
    stem = Path(default_study_dir(corpus)).name.removeprefix("tune-")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stem}-{trial_minutes:g}min")


# ---------------------------------------------------------------------------------- train options
def _train_command():
    from charrnn.commands.train import train

    return train


def _parse_train_args(tokens, what):
    import click

    command = _train_command()
    try:
        return command.make_context("charrnn train", list(tokens))
    except click.exceptions.Exit:
        raise CharrnnError(f"{what}: the train options take no --help here; see 'charrnn train --help'") from None
    except click.UsageError as error:
        message = " ".join(error.format_message().split()).removesuffix(".")
        raise CharrnnError(f"{what}: {message}; see 'charrnn train --help'") from None


def parse_fixed_options(corpus, tokens) -> tuple[dict, dict]:
    """(options given after --, train's defaults), both {dest name: value}, checked by train's own parser."""
    import click

    ctx = _parse_train_args([corpus, *tokens], "the train options after --")
    given = {
        name: value
        for name, value in ctx.params.items()
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE and name != "file"
    }
    for name in TUNE_MANAGED:
        if name in given:
            hint = "--trial-minutes" if name == "max_minutes" else "--out for the study directory"
            raise CharrnnError(f"{option_flag(name)} is set by charrnn tune for each trial; use its {hint}")
    defaults = {param.name: param.default for param in _train_command().params if isinstance(param, click.Option)}
    return given, defaults


def check_space_options(space, source):
    """Each parameter must be a train option the tune leaves to the space, and each of its choices or
    ends a value train's parser takes (types, choice lists, ranges of the option)."""
    names = {param.name for param in _train_command().params}
    for param in space:
        name, flag = param["name"], option_flag(param["name"])
        if name in TUNE_MANAGED:
            raise CharrnnError(f"{source}: {flag} is set by charrnn tune for each trial, not searched")
        if name not in names:
            raise CharrnnError(f"{source}: {flag} is not a charrnn train option; see 'charrnn train --help'")
        for key in param.get("when", {}):
            if key not in names:
                raise CharrnnError(f"{source}: {name}'s condition names {option_flag(key)}, not a charrnn train option")
        for value in values_to_check(param):
            _parse_train_args(["corpus.txt", flag, format_value(value)], f"{source}: {name} = {value!r}")


# -------------------------------------------------------------------------------------- budget
def spent_seconds(trials, now=None, running_here=()) -> float:
    """Wall-clock time during which any trial ran (the union of their intervals), in seconds."""
    now = time.time() if now is None else now
    intervals = []
    for trial in trials:
        attrs = trial.user_attrs
        start = attrs.get("started_at")
        if not isinstance(start, (int, float)):
            continue
        end = now if trial.number in running_here else attrs.get("ended_at") or attrs.get("last_seen") or start
        intervals.append((start, max(start, end)))
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def expected_trial_seconds(trials, trial_seconds) -> float:
    """A trial's wall time: the median of finished whole trials, else the trial time itself."""
    walls = [
        t.user_attrs["ended_at"] - t.user_attrs["started_at"]
        for t in trials
        if t.state.name == "COMPLETE" and "ended_at" in t.user_attrs and "started_at" in t.user_attrs
    ]
    return statistics.median(walls) if walls else trial_seconds


# ------------------------------------------------------------------------------------ the tune
class Tuner:
    def __init__(self, config: TuneConfig, log=print):
        self.config = config
        self._log = log
        self._log_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._local = threading.local()
        self.stop = threading.Event()
        self.running = set()
        self.failures_in_a_row = 0
        self.fatal = None
        self.interrupted = False
        self.host = socket.gethostname()
        self.study_dir = Path(config.out)
        self.trial_seconds = config.trial_minutes * 60
        self.threads = 1

    def log(self, message):
        with self._log_lock:
            self._log(message)

    # ------------------------------------------------------------------------ setting up
    def prepare(self):
        """Checks everything a trial needs, opens (or creates) the study; returns nothing, raises CharrnnError."""
        from charrnn.corpora import file_sha256
        from charrnn.corpus_cache import open_corpus
        from charrnn.parallel import usable_cores

        cfg = self.config
        if not (0 < cfg.minutes < math.inf and 0 < cfg.trial_minutes < math.inf):
            raise CharrnnError("--minutes and --trial-minutes must be positive, finite numbers of minutes")
        if cfg.minutes < cfg.trial_minutes:
            raise CharrnnError(
                f"--minutes {cfg.minutes:g} is less than one trial of --trial-minutes {cfg.trial_minutes:g}; "
                "give the study more time or shorter trials"
            )
        if cfg.workers < 1:
            raise CharrnnError(f"--workers must be at least 1, got {cfg.workers}")
        self.optuna = import_optuna()
        self.fixed, self.defaults = parse_fixed_options(cfg.corpus, cfg.train_args)
        settings = {**self.defaults, **self.fixed}
        # Memory-mapped, as train reads it (a prepared directory knows its own encoding).
        prepared_dir = Path(cfg.corpus).is_dir()
        corpus = open_corpus(cfg.corpus, self.fixed.get("encoding") if prepared_dir else settings["encoding"])
        val_frac, test_frac = settings["val_frac"], settings["test_frac"]
        self.train_chars = int(corpus.n_chars * (1 - val_frac - test_frac))
        self.val_chars = int(corpus.n_chars * val_frac)
        self.vocab_size = len(corpus.vocab)
        cores = usable_cores()
        self.threads = max(1, cores // cfg.workers)
        if cfg.workers > cores:
            self.log(f"note: {cfg.workers} workers on {cores} cores: each trial gets one thread and they share cores")
        sha256 = corpus.sha256 or file_sha256(cfg.corpus)

        if cfg.space_file:
            space = read_space_file(cfg.space_file)
            check_space_options(space, cfg.space_file)
        else:
            space = default_space(self.train_chars, self.vocab_size, self.trial_seconds, self.threads)
            space = check_space(space, "the default space")
        self.name = cfg.study or default_study_name(cfg.corpus, cfg.trial_minutes)
        self.study_dir.mkdir(parents=True, exist_ok=True)
        self.url = storage_url(cfg)
        self.storage = open_storage(self.optuna, self.url)
        self.study = None
        self.study = self.optuna.create_study(
            storage=self.storage, study_name=self.name, direction="minimize", load_if_exists=True
        )
        # Now that the study is known, the sampler can be seeded for this session (see _sampler).
        self.study.sampler, self.study.pruner = self._sampler(), self._pruner()
        made = {
            "trial_minutes": cfg.trial_minutes,
            "corpus_sha256": sha256,
            "corpus": str(Path(cfg.corpus).resolve()),
            "train_args": list(cfg.train_args),
            "space": space,
        }
        stored = self.study.user_attrs.get(ATTRIBUTE)
        if stored is None:
            self.study.set_user_attr(ATTRIBUTE, made)
            stored = self.study.user_attrs.get(ATTRIBUTE) or made
            self.new_study = True
            if not cfg.space_file:
                start = baseline(space, self.fixed, self.defaults)
                self.study.enqueue_trial(start, skip_if_exists=True)
        else:
            self.new_study = False
            self._check_same_study(stored, made)
        self.space = check_space(stored["space"], "the study's space")
        write_manifest(self.study_dir, cfg, self.name)
        atomic_write(self.study_dir / SPACE_FILE, lambda out: out.write(json.dumps(self.space, indent=2).encode()))

    def _check_same_study(self, stored, made):
        where = f"study {self.name!r} in {masked_url(self.url)}"
        hint = "keep its options, or start another study with --study NAME or --out DIR"
        if stored.get("trial_minutes") != made["trial_minutes"]:
            raise CharrnnError(
                f"{where} runs trials of {stored.get('trial_minutes')} minutes, not {made['trial_minutes']:g}; {hint}"
            )
        if stored.get("corpus_sha256") != made["corpus_sha256"]:
            raise CharrnnError(f"{where} was made for another corpus ({stored.get('corpus')}); {hint}")
        if stored.get("train_args") != made["train_args"]:
            fixed = " ".join(stored.get("train_args") or []) or "none"
            raise CharrnnError(f"{where} was made with other train options after -- ({fixed}); {hint}")
        if self.config.space_file and stored.get("space") != made["space"]:
            raise CharrnnError(f"{where} searches another space (its {SPACE_FILE}); {hint}")

    def _sampler(self):
        samplers = self.optuna.samplers
        seed = self.config.seed
        if seed is not None:
            # A continued study's session must not draw its first session's points again.
            seed += len(self.study.get_trials(deepcopy=False)) if self.study is not None else 0
        if self.config.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        # Multivariate TPE with groups models the conditional parameters (lr_decay with the step
        # schedule) jointly; the constant liar keeps parallel workers from all trying the same point.
        return samplers.TPESampler(
            seed=seed,
            n_startup_trials=STARTUP_TRIALS,
            multivariate=True,
            group=True,
            constant_liar=True,
        )

    def _pruner(self):
        pruners, seconds = self.optuna.pruners, self.trial_seconds
        if self.config.pruner == "none":
            return pruners.NopPruner()
        if self.config.pruner == "hyperband":
            return pruners.HyperbandPruner(
                min_resource=max(1, round(seconds / 9)), max_resource=max(2, round(seconds)), reduction_factor=3
            )
        # Steps are seconds of training: a trial is compared with the others at a quarter and at half of
        # its time, and goes on only while in the better half.
        return pruners.SuccessiveHalvingPruner(min_resource=max(1, round(seconds / 4)), reduction_factor=2)

    # ---------------------------------------------------------------------------- running
    def trials(self):
        return self.study.get_trials(deepcopy=False)

    def describe_start(self):
        cfg = self.config
        trials = self.trials()
        spent = spent_seconds(trials)
        state = "new" if self.new_study else f"continued: {len(trials)} trial(s) so far"
        self.log(f"study {self.name} ({state}) in {masked_url(self.url)}")
        self.log(f"search space ({self.study_dir / SPACE_FILE}): {describe_space(self.space)}")
        fixed = " ".join(cfg.train_args)
        if fixed:
            self.log(f"fixed train options: {fixed}")
        workers = f"{cfg.workers} worker(s) of {self.threads} thread(s)"
        self.log(
            f"budget: {cfg.minutes:g} min for the study ({self._minutes(spent)} already spent), trials of "
            f"{cfg.trial_minutes:g} min, {workers}; watch it with: optuna-dashboard {masked_url(self.url)}"
        )

    def run(self):
        """Runs trials until the budget (or --trials) is used up; returns 'finished' or 'interrupted'."""
        self.fail_dead_trials()
        self.describe_start()
        done = [threading.Event() for _ in range(self.config.workers)]
        workers = [
            threading.Thread(target=self._worker, args=(finished,), name=f"tune-worker-{k}")
            for k, finished in enumerate(done)
        ]
        previous = _handle_sigterm()
        try:
            for worker in workers:
                worker.start()
            _wait(done)
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop.set()
            if self.running:
                self.log(f"interrupted: stopping {len(self.running)} running trial(s); each saves a checkpoint")
            _wait(done)
        finally:
            _restore_sigterm(previous)
        self.fail_dead_trials()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.optuna.storages.fail_stale_trials(self.study)
        trials = self.trials()
        counts = {}
        for trial in trials:
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        self.log(
            f"study {self.name}: {self._minutes(spent_seconds(trials))} of {self.config.minutes:g} spent; "
            f"{len(trials)} trial(s): {summary or 'none'}"
        )
        if self.fatal is not None:
            raise self.fatal
        return "interrupted" if self.interrupted else "finished"

    def _may_start(self):
        """None if a trial may start now, else why not."""
        trials = self.trials()
        if self.config.trials:
            counted = sum(1 for t in trials if t.state.name in COUNTED_STATES)
            if counted >= self.config.trials:
                return f"the study has its {self.config.trials} trial(s)"
        spent = spent_seconds(trials, running_here=self.running)
        needed = expected_trial_seconds(trials, self.trial_seconds)
        if spent + needed > self.config.minutes * 60:
            return f"{spent / 60:.1f} of {self.config.minutes:g} min spent, and a trial takes about {needed / 60:.1f}"
        return None

    def _worker(self, done):
        try:
            self._trials_until_done()
        finally:
            done.set()

    def _trials_until_done(self):
        while not self.stop.is_set():
            self._start_lock.acquire()
            self._local.holds_start = True
            try:
                reason = self._may_start() if not self.stop.is_set() else "stopped"
                if reason is not None:
                    if reason != "stopped" and not self.running:
                        self.log(f"no more trials: {reason}")
                    return
                self.fail_dead_trials()
                self.study.optimize(self._objective, n_trials=1)
                self.failures_in_a_row = 0
            except TuneInterrupted:
                return
            except TrialFailed as error:
                self.failures_in_a_row += 1
                if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                    self._give_up(CharrnnError(f"{MAX_FAILURES_IN_A_ROW} trials in a row failed, the last: {error}"))
                    return
            except CharrnnError as error:
                self._give_up(error)
                return
            except Exception as error:  # the storage went away, say: stop every worker, say it in one line
                detail = " ".join(str(error).split("\n")[0].split()) or type(error).__name__
                self._give_up(CharrnnError(f"the tune stopped: {type(error).__name__}: {detail}"))
                return
            finally:
                self._release_start()

    def _give_up(self, error):
        if self.fatal is None:
            self.fatal = error
        self.stop.set()

    def _release_start(self):
        if getattr(self._local, "holds_start", False):
            self._local.holds_start = False
            self._start_lock.release()

    def _objective(self, trial):
        # The trial exists now: another worker may check the budget and ask for the next one.
        self.running.add(trial.number)
        self._release_start()
        try:
            return self._run(trial)
        finally:
            self.running.discard(trial.number)

    def _run(self, trial):
        number = trial.number
        run_dir = (self.study_dir / TRIALS_DIR / f"trial-{number:04d}").resolve()
        started = time.time()
        trial.set_user_attr("started_at", started)
        trial.set_user_attr("last_seen", started)
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("threads", self.threads)
        options = self._trial_options(trial)
        args = [self.config.corpus]
        for name, value in options.items():
            args += [option_flag(name), format_value(value)]
        args += [*self.config.train_args, "--out", str(run_dir), "--max-minutes", f"{self.config.trial_minutes:g}"]
        trial.set_user_attr("train_args", args[1:])
        self.log(f"trial {number} started: {describe_options(options)}  ({run_dir})")
        lock = self._hold_lock(number)
        try:
            outcome = run_trial(
                args,
                run_dir,
                self.threads,
                self.trial_seconds,
                report=lambda step, loss: self._report(trial, step, loss),
                should_prune=trial.should_prune,
                stop=self.stop,
                alive=lambda: trial.set_user_attr("last_seen", time.time()),
            )
        except (TrialFailed, OptionsRefused) as error:
            raise self._failed(trial, type(error), str(error)) from None
        finally:
            trial.set_user_attr("ended_at", time.time())
            _release_lock(lock)
        self._record(trial, outcome)
        if outcome.state == "interrupted":
            if self.stop.is_set():
                self.log(
                    f"trial {number} interrupted at {self._minutes(outcome.train_seconds)}; its run keeps a checkpoint: {run_dir}"
                )
                raise TuneInterrupted()
            raise self._failed(trial, TrialFailed, f"it did not end within its time; see {run_dir / 'train.log'}")
        best = outcome.best_val_loss
        if best is None:
            raise self._failed(trial, TrialFailed, f"it reported no validation loss; see {run_dir / 'train.log'}")
        if outcome.state == "pruned":
            self.log(f"trial {number} pruned at {self._minutes(outcome.train_seconds)}: val {best:.4f}")
            raise self.optuna.TrialPruned(f"val {best:.4f} at {self._minutes(outcome.train_seconds)}")
        leader = self._best_complete_value()
        note = "  (best so far)" if leader is None or best < leader else f"  (best: {leader:.4f})"
        self.log(f"trial {number} finished: val {best:.4f} after {self._minutes(outcome.train_seconds)}{note}")
        return best

    def _failed(self, trial, kind, message):
        trial.set_user_attr("error", message)
        self.log(f"trial {trial.number} failed: {message}")
        return kind(f"trial {trial.number}: {message}")

    def _trial_options(self, trial):
        chosen = suggest(trial, self.space, self.fixed, self.defaults)
        settings = {**self.defaults, **self.fixed, **chosen}
        options = dict(chosen)
        given = set(chosen) | set(self.fixed)
        if settings["lr_schedule"] == "cosine" and "min_lr" not in given:
            options["min_lr"] = settings["lr"] / 10  # nanoGPT's choice: the cosine ends at a tenth of its peak
        if "eval_every" not in given:
            predicted = self._predicted_iterations(settings)
            trial.set_user_attr("predicted_iterations", predicted)
            calibrated = predicted * self._speed_ratio()
            options["eval_every"] = max(1, round(calibrated / EVALS_PER_TRIAL))
        if "keep_last" not in given:
            options["keep_last"] = 1  # the best checkpoint and the latest: trials would fill the disk otherwise
        return options

    def _predicted_iterations(self, settings) -> float:
        per_char = seconds_per_char(
            settings["model"], settings["layers"], settings["hidden"], self.vocab_size, self.threads
        )
        per_eval = self.val_chars * per_char / 3 + EVAL_FIXED_SECONDS  # forward only
        training = max(0.5 * self.trial_seconds, self.trial_seconds - EVALS_PER_TRIAL * per_eval)
        return training / (settings["batch_size"] * settings["seq_length"] * per_char)

    def _speed_ratio(self) -> float:
        """How much faster this machine ran earlier trials than predicted (median; 1 before any)."""
        ratios = [
            t.user_attrs["speed_ratio"]
            for t in self.trials()
            if t.user_attrs.get("host") == self.host and isinstance(t.user_attrs.get("speed_ratio"), (int, float))
        ]
        return statistics.median(ratios) if ratios else 1.0

    def _record(self, trial, outcome):
        trial.set_user_attr("train_seconds", outcome.train_seconds)
        trial.set_user_attr("iterations", outcome.iterations)
        if outcome.best_val_loss is not None:
            trial.set_user_attr("best_val_loss", outcome.best_val_loss)
        predicted = trial.user_attrs.get("predicted_iterations")
        if predicted and outcome.train_seconds >= 0.2 * self.trial_seconds and outcome.iterations:
            measured = outcome.iterations / outcome.train_seconds * self.trial_seconds
            trial.set_user_attr("speed_ratio", measured / predicted)

    def _minutes(self, seconds) -> str:
        """'2.4 min', with a second decimal for trials shorter than a minute (tests, trial runs)."""
        return f"{seconds / 60:.{2 if self.config.trial_minutes < 1 else 1}f} min"

    def _report(self, trial, step, loss):
        trial.report(loss, step)
        self.log(f"trial {trial.number}: val {loss:.4f} at {self._minutes(step)}")

    def _best_complete_value(self):
        values = [t.value for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        return min(values, default=None)

    # -------------------------------------------------------------- trials of dead tunes
    def _hold_lock(self, number):
        """A lock on locks/trial-N.lock held while trial N runs here; None where flock is missing."""
        try:
            import fcntl
        except ImportError:
            return None
        directory = self.study_dir / LOCKS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        # Locked under a private name, then renamed: another tune never sees the file unlocked.
        temporary = directory / f".trial-{number:04d}.{os.getpid()}.{threading.get_ident()}"
        handle = open(temporary, "wb")
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.replace(temporary, directory / f"trial-{number:04d}.lock")
        return handle

    def fail_dead_trials(self):
        """Marks FAIL the RUNNING trials of this study directory whose tune process is gone."""
        try:
            import fcntl
        except ImportError:
            return
        for trial in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            if trial.number in self.running or trial.user_attrs.get("host") != self.host:
                continue
            run_dir = trial.user_attrs.get("run_dir")
            if not run_dir or Path(run_dir).parent.parent.resolve() != self.study_dir.resolve():
                continue  # another study directory on this machine: its own tune, or the heartbeat, will see
            path = self.study_dir / LOCKS_DIR / f"trial-{trial.number:04d}.lock"
            try:
                with open(path, "rb") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    # Unlinked by a trial that just ended (its own state is being written): not dead.
                    if os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
                        continue
            except FileNotFoundError:
                continue  # not started yet, or ended
            except OSError:
                continue  # held: its tune is alive
            study_id = self.storage.get_study_id_from_name(self.name)
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            with suppress(self.optuna.exceptions.UpdateFinishedTrialError):
                self.storage.set_trial_state_values(trial_id, self.optuna.trial.TrialState.FAIL)
                self.log(f"trial {trial.number} was left running by a tune that died; marked failed ({run_dir})")


def _release_lock(handle):
    if handle is not None:
        # Gone before it is unlocked: a tune that opened it a moment ago finds it unlinked (see fail_dead_trials).
        with suppress(OSError):
            os.unlink(handle.name)
        handle.close()


def _wait(done):
    """Until every worker has set its event. Not Thread.join: a Ctrl-C that lands inside join() can leave
    the thread marked finished while it still runs (CPython 3.11), and the tune would report too early."""
    while not all(event.is_set() for event in done):
        time.sleep(0.2)


def _handle_sigterm():
    """SIGTERM stops the tune as Ctrl-C does (trials save checkpoints); only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous):
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
