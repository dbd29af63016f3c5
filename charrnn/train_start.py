"""Where a training run starts: its run directory, corpus, model and state, made fresh (random weights
or --init-from's), or resumed from a checkpoint read once (a charrnn.run_dir.ResumePoint).

A resumed run takes its model, with the plan its checkpoint recorded, and its state from that one
reading; nothing is built to be thrown away. A fresh run chooses its plan (charrnn.planner) unless
--plan names one. `warm_up` compiles what the run will use before its clock starts.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data import BatchLoader
from charrnn.distributed import World
from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig
from charrnn.optim import clip_grad_norm, clip_grad_value, make_optimizer
from charrnn.parallel import thread_budget, usable_cores
from charrnn.plan import Plan
from charrnn.planner import choose_plan
from charrnn.run_dir import ResumePoint, RunDir, read_resume_point
from charrnn.saved import load_model, model_from_checkpoint
from charrnn.train_corpus import TrainingCorpus, read_training_corpus
from charrnn.train_state import TrainState, check_resumable


@dataclass
class Start:
    run_dir: RunDir
    continuing: bool  # the run resumes the one in its own directory
    corpus: TrainingCorpus
    model: Model
    state: TrainState


def start_run(config, resume_from=None, log=print, base=None, world=None):
    """A Start for `config` (validated already). resume_from: a run directory, or the ResumePoint read
    from one. base: the --init-from checkpoint as charrnn.saved.load_model gives it, if loaded already.
    world: the charrnn.distributed.World this process is a rank of (default: one process); only its
    writer writes the run directory, and each rank plans for its share of the batch and the cores.
    The run directory is created last, so a run refused for its corpus, options or checkpoint leaves
    no empty directory behind."""
    world = world or World()
    source = resume_from.run_dir if isinstance(resume_from, ResumePoint) else resume_from
    continuing = source is not None and Path(config.out).resolve() == Path(source).resolve()
    run_dir = RunDir(config.out, continuing=continuing, writer=world.writer)
    if source is not None and not isinstance(resume_from, ResumePoint):
        resume_from = read_resume_point(source, log)

    saved = vocab = None  # the corpus's vocabulary, unless a fine-tuned run keeps its base model's
    if resume_from is not None:
        saved = model_from_checkpoint(resume_from.arrays, resume_from.meta, source=resume_from.path)
        vocab = saved[1] if config.init_from else None
    elif config.init_from:
        base = base or load_model(config.init_from)
        vocab = base[1]
    corpus = read_training_corpus(config, vocab, log)
    loader = BatchLoader(corpus.train, config.batch_size, config.seq_length)
    if config.val_frac > 0 and len(corpus.val) < 2:
        raise CharrnnError("the validation split is too short to evaluate; raise --val-frac or use a longer corpus")

    model_config = ModelConfig(
        config.model, len(corpus.vocab), config.hidden, config.layers, config.dropout, config.weight_drop
    )
    if resume_from is None:
        model = _new_model(config, model_config, base if config.init_from else None, log, world)
        state = TrainState.start(config, model, loader)
    else:
        model, saved_vocab = saved
        check_resumable(
            resume_from.meta, config, corpus.record, (corpus.vocab, model_config), (saved_vocab, model.config)
        )
        state = TrainState.from_checkpoint(
            resume_from.arrays, resume_from.meta, model, loader, config.batch_size, resume_from.path
        )
        log(f"resumed from {resume_from.path} at iteration {state.iteration} (epoch {state.epoch:.2f})")
        ranks = resume_from.meta.get("world_size", 1)
        if ranks != world.size:
            # The recorded plan was for another share of the batch and of the cores; bits differ anyway.
            model.plan = _plan(config, model.config, log, world)
            log(
                f"note: the checkpoint was trained on {ranks} rank(s), this run has {world.size}: {model.plan.describe()}"
            )
        used = model.plan.parts(config.batch_size, config.hidden)
        if used > usable_cores():
            log(
                f"note: the checkpoint's plan runs {used} threads but this machine has {usable_cores()} usable "
                "cores; it keeps the plan so the run stays bit-exact, only slower"
            )
    run_dir.prepare()
    return Start(run_dir, continuing, corpus, model, state)


def _new_model(config, model_config, base, log, world):
    """Random weights seeded by --seed, or a copy of the base model's, on this machine's plan."""
    params = None
    if base is not None:
        shape = base[0].config
        if (shape.cell, shape.layers, shape.hidden) != (config.model, config.layers, config.hidden):
            raise CharrnnError(
                f"--init-from {config.init_from} holds a {shape.cell} {shape.layers}x{shape.hidden} model but this "
                f"run asks for {config.model} {config.layers}x{config.hidden}; drop --model, --layers and --hidden "
                "to take the checkpoint's"
            )
        params = {name: value.copy() for name, value in base[0].params.items()}
    model = Model(model_config, params=params, dtype=np.float32, seed=config.seed)
    model.plan = _plan(config, model_config, log, world)
    return model


def _plan(config, model_config, log, world):
    """--plan, or the plan timed for this rank's share of the batch on its share of the cores."""
    threads = thread_budget()
    if world.distributed:
        threads = world.thread_share(threads, usable_cores(), os.cpu_count() or usable_cores())
    if config.plan != "auto":
        return Plan(config.plan, threads)
    streams = world.stream_share(config.batch_size)[1]
    return choose_plan(model_config, streams, config.seq_length, note=log, threads=threads)


def warm_up(model, optimizer, vocab, unigram, batch_size):
    """Compiles (or loads from cache) every kernel a run uses, on copies, so timing excludes it; loads
    the sampler and the plotting library too, which a time-budgeted cosine's timed evaluation would
    otherwise pay for."""
    import charrnn.plots  # noqa: F401 (matplotlib)
    from charrnn.sampling import generate

    params = {name: value.copy() for name, value in model.params.items()}
    scratch = Model(model.config, params=params, dtype=np.float32, plan=model.plan)
    # The run's own batch size, so the batch is cut into the same slices (and array layouts).
    ids = np.zeros((batch_size, 2), dtype=np.int32)
    grads = scratch.zeros_like_params()
    scratch.loss_and_grads(ids, ids, scratch.initial_state(batch_size), grads, np.random.default_rng(0))
    clip_grad_norm(grads, 1.0)
    clip_grad_value(grads, 5.0)
    make_optimizer(**optimizer.hyper(), params=params).step(params, grads)
    list(generate(scratch, vocab, 2, seed=0, start_probs=unigram))
