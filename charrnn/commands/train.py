"""`charrnn train FILE`: options named after karpathy/char-rnn's train.lua flags."""

import sys
from pathlib import Path

import click

from charrnn.cells import CELLS
from charrnn.errors import CharrnnError
from charrnn.train_config import TrainConfig, default_out_dir

DEFAULTS = TrainConfig(corpus="", out="")


def option(name, help, **kwargs):
    field = name.lstrip("-").replace("-", "_")
    if "default" not in kwargs and hasattr(DEFAULTS, field):
        kwargs["default"] = getattr(DEFAULTS, field)
    kwargs.setdefault("show_default", True)
    return click.option(name, help=help, **kwargs)


@click.command()
@click.argument("file", required=False, type=click.Path())
@option(
    "--model",
    "cell type (" + "; ".join(f"{c.name}: {c.summary}" for c in CELLS.values()) + ")",
    type=click.Choice(list(CELLS)),
)
@option("--layers", "stacked recurrent layers", type=int)
@option("--hidden", "hidden units per layer", type=int)
@option("--dropout", "dropout between layers and before the output (0 = off)", type=float)
@option(
    "--weight-drop", "DropConnect on the recurrent weights W_h, one mask per window (AWD-LSTM; 0 = off)", type=float
)
@option(
    "--plan",
    "how a window is cut between threads: by streams (batch), by hidden units (units), or "
    "auto: whichever a training pass of this shape ran faster on this machine (timed once, cached); "
    "a resumed run keeps its checkpoint's",
    type=click.Choice(["auto", "batch", "units"]),
)
@option("--seq-length", "characters per window of truncated backprop through time", type=int)
@option("--batch-size", "parallel streams per minibatch", type=int)
@option("--optimizer", "update rule", type=click.Choice(["adam", "rmsprop", "adagrad", "sgd"]))
@option("--lr", "learning rate", type=float)
@option("--lr-decay", "multiply the learning rate by this at each epoch end after --lr-decay-after", type=float)
@option("--lr-decay-after", "epochs before the learning rate starts decaying", type=float)
@option(
    "--lr-schedule",
    "step: char-rnn's per-epoch decay, which needs no run length (a time limit just "
    "stops it); cosine: warm-up, then cosine down to --min-lr at --lr-decay-iters, --max-iters, or an end "
    "fitted to --max-minutes",
    type=click.Choice(["step", "cosine"]),
)
@option("--warmup-iters", "cosine schedule: iterations of linear warm-up", type=int)
@option(
    "--lr-decay-iters",
    "cosine schedule: iteration where it reaches --min-lr (0 = --max-iters; without either, fitted to --max-minutes)",
    type=int,
)
@option("--min-lr", "cosine schedule: the learning rate at its end", type=float)
@option("--weight-decay", "decoupled weight decay (adam only)", type=float)
@option("--grad-clip", "clamp each gradient element to +-this (0 = off), as char-rnn", type=float)
@option("--max-grad-norm", "rescale gradients whose global norm exceeds this (0 = off)", type=float)
@option("--val-frac", "fraction of the corpus at its end held out for validation", type=float)
@option("--test-frac", "fraction after the validation part held out for testing", type=float)
@option("--max-epochs", "stop after this many passes over the training split (0 = no limit)", type=float)
@option("--max-iters", "stop at this iteration (0 = no limit)", type=int)
@option(
    "--max-minutes",
    "stop after this many minutes of training, compile time excluded (0 = no limit). A "
    "cosine schedule without --max-iters or --lr-decay-iters times its first iterations and an evaluation, "
    "then fixes (and logs) its end so that it finishes within this budget; training stops there, and "
    "--resume keeps that end",
    type=float,
)
@option("--print-every", "iterations between progress lines", type=int)
@option("--eval-every", "iterations between validation runs (each saves a checkpoint and a sample)", type=int)
@option("--checkpoint-every", "iterations between extra checkpoints (0 = at each evaluation)", type=int)
@option("--keep-last", "keep only the last K checkpoints besides the best (0 = keep all)", type=int)
@option("--sample-length", "characters in the samples written at milestones", type=int)
@option("--sample-temperature", "temperature of those samples", type=float)
@option("--encoding", "read the file as utf-8 text or as raw bytes", type=click.Choice(["utf-8", "bytes"]))
@option("--seed", "seeds initialisation, data order of dropout masks and samples", type=click.IntRange(min=0))
@option(
    "--out",
    "run directory [default: runs/<corpus>-<model>-<layers>x<hidden>]",
    default=None,
    type=click.Path(file_okay=False),
)
@option(
    "--init-from",
    "start from this checkpoint's weights (a run directory: its best), e.g. to fine-tune "
    "on new text; its model type and size are taken, the optimizer starts afresh",
    default="",
    type=click.Path(),
    show_default=False,
)
@option(
    "--resume",
    "continue the run in this directory from its latest checkpoint",
    default=None,
    type=click.Path(file_okay=False),
)
@click.pass_context
def train(ctx, file, resume, out, **options):
    """Train a character-level model on FILE (any text file; --encoding bytes for anything else).

    FILE may also be a directory made by `charrnn prepare`, whose encoding and split fractions are then
    the defaults. Either way the ids are memory-mapped: a text file is prepared once into the corpus
    cache ($CHARRNN_CACHE, else ~/.cache/charrnn; CHARRNN_CACHE=off reads it into memory instead).
    """
    given = {name for name in options if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    from charrnn import distributed

    # Under mpirun/srun this process is one rank of a job; without a launcher, a world of one.
    try:
        world = distributed.join_world()
    except distributed.AgreedError:
        launched = distributed.world_from_environment()
        if launched and launched[0] != 0:
            sys.exit(1)  # rank 0 says it
        raise
    if not world.distributed:
        return _train(file, resume, out, options, given, world, click.echo)
    log = click.echo if world.writer else _silent
    try:
        _train(file, resume, out, options, given, world, log)
    except SystemExit:
        world.leaving()  # interrupted: rank 0 saved a checkpoint and said so
        raise
    except distributed.AgreedError:
        if not world.writer:
            sys.exit(1)
        raise  # one line from rank 0; every rank stops here
    except BaseException as error:  # noqa: B036 (a rank that stops alone must stop the job, or the others wait)
        if world.writer or not isinstance(error, CharrnnError):
            world.abort(error)  # one line, then MPI ends every rank
        sys.exit(1)  # the other ranks meet the same error; rank 0 said it


def _silent(message):
    pass


def _train(file, resume, out, options, given, world, log):
    # Each checkpoint is read once: for the options here, and handed on for the model and state.
    from charrnn.run_dir import read_resume_point
    from charrnn.saved import load_model
    from charrnn.train import run_training

    point = base = None
    if resume:
        point = read_resume_point(resume, log=log)
        config = _resumed_config(point, file, out, options, given)
    else:
        if file is None:
            raise CharrnnError(
                "name a text file or a prepared directory to train on, e.g. charrnn train input.txt "
                "(or --resume RUN_DIR)"
            )
        from charrnn.corpus_cache import corpus_defaults

        options.update({key: value for key, value in corpus_defaults(file).items() if key not in given})
        if options["init_from"]:
            base = load_model(options["init_from"], which="best")
            _take_base_shape(base[0].config, options, given)
        if out is None:
            out = default_out_dir(file, options["model"], options["layers"], options["hidden"])
        config = TrainConfig(corpus=file, out=out, **options)
    world.stream_share(config.batch_size)  # an uneven split is refused before anything is read
    ranks = f"mpirun -n {world.size} " if world.distributed else ""
    world.watch_peers(f"resume from the last checkpoint: {ranks}charrnn train --resume {config.out}")
    reason = run_training(config, resume_from=point, log=log, base=base, world=world)
    if reason == "interrupted":
        sys.exit(130)  # the shell's convention for Ctrl-C; the checkpoint is already saved


def _resumed_config(point, file, out, options, given):
    """The options the checkpoint's run was trained with, those given on the command line on top."""
    resume = point.run_dir
    saved = point.meta.get("train_config")
    if not saved or not isinstance(saved, dict):
        raise CharrnnError(
            f"the checkpoint in {resume} holds no usable training configuration; it cannot be resumed: start a new run"
        )
    values = dict(saved)
    values.update({name: options[name] for name in given})
    values["corpus"] = file or saved.get("corpus")
    values["out"] = out or str(resume)
    if not isinstance(values["corpus"], str):
        raise CharrnnError(
            f"the checkpoint in {resume} does not record its corpus; pass it: charrnn train FILE --resume {resume}"
        )
    if not Path(values["corpus"]).exists():
        raise CharrnnError(
            f"the run's corpus {values['corpus']} is missing; pass its path: charrnn train FILE --resume {resume}"
        )
    return TrainConfig.from_dict(values)


def _take_base_shape(shape, options, given):
    """--init-from: the model type and size are the checkpoint's unless given (then they must agree)."""
    for option_name, key in (("model", "cell"), ("layers", "layers"), ("hidden", "hidden")):
        if option_name not in given:
            options[option_name] = getattr(shape, key)
