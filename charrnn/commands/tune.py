"""`charrnn tune FILE --minutes M --trial-minutes T`: search train options with Optuna within a time budget."""

import sys
from pathlib import Path

import click

from charrnn.errors import CharrnnError


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True})
@click.argument("file", type=click.Path())
@click.option("--minutes", type=float, help="the study's budget: minutes of wall-clock time its trials may run")
@click.option("--trial-minutes", type=float, help="minutes of training each trial gets (its --max-minutes)")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="study directory: its storage, trial runs and report  [default: runs/tune-<corpus>]",
)
@click.option(
    "--storage",
    default=None,
    help="an Optuna RDB storage URL (postgresql://user:password@host/db, ...) to share the study between "
    "machines  [default: sqlite in the study directory]",
)
@click.option("--study", "study_name", default=None, help="study name  [default: <corpus>-<trial minutes>min]")
@click.option(
    "--space",
    "space_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="search space file (TOML, or JSON): a table per train option with choices = [...], or low and high "
    "(log = true for a log scale, step), or value; when = {option = value} searches it only then",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="trials run at once here")
@click.option(
    "--trials",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="stop starting trials once the study holds this many (failed ones aside; 0 = no limit but time)",
)
@click.option("--sampler", default="tpe", show_default=True, type=click.Choice(["tpe", "random"]))
@click.option(
    "--pruner",
    default="halving",
    show_default=True,
    type=click.Choice(["halving", "hyperband", "none"]),
    help="halving: successive halving at 1/4 and 1/2 of a trial's time",
)
@click.option("--seed", default=None, type=click.IntRange(min=0), help="seeds the sampler")
@click.option("--report", is_flag=True, help="print the leaderboard and write best.json and val_loss.png, then exit")
@click.argument("train_options", nargs=-1, type=click.UNPROCESSED)
def tune(file, minutes, trial_minutes, out, storage, study_name, space_file, workers, trials, sampler, pruner, seed,
         report, train_options):  # fmt: skip
    """Search train options for FILE with Optuna within a time budget.

    Each trial is an ordinary `charrnn train` run in STUDY_DIR/trials/, stopped early (SIGINT, with a
    checkpoint) when its val losses fall behind. Train options after `--` are fixed for every trial,
    e.g. `charrnn tune input.txt --minutes 45 --trial-minutes 3 -- --model lstm`. Run the same command
    again to continue a study, on this machine or (with --storage) on others at the same time;
    `charrnn tune STUDY_DIR --report` reports on one.
    """
    from charrnn.tune import TuneConfig, Tuner, default_study_dir
    from charrnn.tune_report import write_report
    from charrnn.tune_storage import load_study_of

    if report:
        study_dir = file if Path(file).is_dir() else out or default_study_dir(file)
        _, study, _, manifest = load_study_of(study_dir, storage)
        write_report(study, study_dir, manifest.get("corpus") or file, log=click.echo)
        return
    from charrnn.prepared import is_prepared

    if Path(file).is_dir() and not is_prepared(file):
        raise CharrnnError(
            f"{file} is a directory but not a prepared corpus; name a text file or a `charrnn prepare` "
            "directory to tune on, or add --report to report on a study"
        )
    if not Path(file).exists():
        raise CharrnnError(f"{file} does not exist; name a text file to tune on")
    if minutes is None or trial_minutes is None:
        raise CharrnnError("give the study's budget and each trial's time, e.g. --minutes 45 --trial-minutes 3")
    config = TuneConfig(
        corpus=file,
        minutes=minutes,
        trial_minutes=trial_minutes,
        out=out or default_study_dir(file),
        storage=storage,
        study=study_name,
        space_file=space_file,
        workers=workers,
        trials=trials,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        train_args=tuple(train_options),
    )
    tuner = Tuner(config, log=click.echo)
    tuner.prepare()
    try:
        outcome = tuner.run()
    finally:
        write_report(tuner.study, config.out, file, log=click.echo)
    if outcome == "interrupted":
        sys.exit(130)
