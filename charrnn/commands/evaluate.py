"""`charrnn eval CKPT [FILE]` (held-out loss, sample novelty) and `charrnn info CKPT`."""

import json
import math

import click

from charrnn.checkpoint import resolve_checkpoint
from charrnn.commands import WHICH, note
from charrnn.data import BYTES, eval_stream_count, known_text, read_text_file
from charrnn.errors import CharrnnError
from charrnn.evaluate import NOVELTY_LENGTHS, evaluate_loss, novel_substring_fractions
from charrnn.plan import Plan
from charrnn.saved import checkpoint_summary, load_model, load_split_ids

_JSON = click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")


def encode_file(path, vocab, skip_unknown):
    """Ids of a text file in the checkpoint's vocabulary; symbols outside it are an error or left out."""
    text = read_text_file(path, vocab.mode, "the file to evaluate")
    # Counted: how many characters are left out changes the loss, so the message says.
    text = known_text(vocab, text, str(path), skip_unknown, note, flag="--skip-unknown", counted=True)
    ids = vocab.encode(text)
    if len(ids) < 2:
        raise CharrnnError(f"{path} has {len(ids)} usable characters; the loss needs at least 2")
    return ids


def _decoded_split(vocab, ids):
    return vocab.decode_bytes(ids) if vocab.mode == BYTES else vocab.decode(ids)


# Without a run's own layout (a model-only checkpoint), windows as charrnn train's defaults cut them.
EVAL_BATCH, EVAL_STEPS = 50, 100


def eval_layout(meta, batch_size=None, seq_length=None):
    """(streams, window length) to evaluate with: those given, else the run's training batch size and
    sequence length. The streams carry their state from window to window, so another layout reads the
    same characters from other states and gives a loss a hair different from the run's own evaluations."""
    train = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}

    def own(value, key, fallback):
        if value is not None:
            return value
        recorded = train.get(key)
        whole = isinstance(recorded, (int, float)) and not isinstance(recorded, bool)
        if not whole or not math.isfinite(recorded) or recorded != int(recorded) or recorded < 1:
            return fallback  # absent or damaged: not a whole number of at least 1
        return int(recorded)

    return own(batch_size, "batch_size", EVAL_BATCH), own(seq_length, "seq_length", EVAL_STEPS)


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default=None,
    help="evaluate on this split of the training corpus (default: val, when no FILE is given)",
)
@click.option(
    "--batch-size",
    default=None,
    type=int,
    help=f"streams evaluated side by side (default: the run's own, as its logged evaluations; else {EVAL_BATCH})",
)
@click.option(
    "--seq-length",
    default=None,
    type=int,
    help=f"characters per window, state carried (default: the run's own; else {EVAL_STEPS})",
)
@click.option("--skip-unknown", is_flag=True, help="leave out characters of FILE that are not in the vocabulary")
@click.option(
    "--novelty",
    "novelty_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="also report how much of this sample file is copied from the training split",
)
@_JSON
@WHICH
def evaluate(checkpoint, file, split, batch_size, seq_length, skip_unknown, novelty_file, as_json, which):
    """Loss of CHECKPOINT on FILE, or on its corpus's validation/test split, in nats and bits per character.

    With --novelty and neither FILE nor --split, only the novelty table is printed.
    """
    if file is not None and split is not None:
        raise CharrnnError("give either FILE or --split, not both")
    if (batch_size is not None and batch_size < 1) or (seq_length is not None and seq_length < 1):
        raise CharrnnError("--batch-size and --seq-length must be at least 1")
    path = resolve_checkpoint(checkpoint, which)
    model, vocab, meta = load_model(path)
    batch_size, seq_length = eval_layout(meta, batch_size, seq_length)
    result = {"checkpoint": str(path)}

    if file is not None or split is not None or novelty_file is None:
        if file is not None:
            ids = encode_file(file, vocab, skip_unknown)
            result["file"] = str(file)
        else:
            split = split or "val"
            ids = load_split_ids(meta, split)
            result["split"] = split
        result.update(evaluate_loss(model, ids, batch_size, seq_length))
        # The streams the windows used: fewer than asked on a text too short for that many.
        result.update(batch_size=eval_stream_count(len(ids), batch_size), seq_length=seq_length)

    if novelty_file is not None:
        sample_text = read_text_file(novelty_file, vocab.mode, "the sample file")
        train_text = _decoded_split(vocab, load_split_ids(meta, "train"))
        result["novelty_file"] = str(novelty_file)
        result["train_chars"] = len(train_text)
        result["novelty"] = novel_substring_fractions(sample_text, train_text, NOVELTY_LENGTHS)

    if as_json:
        click.echo(json.dumps(result))
        return
    if "loss_nats" in result:
        source = result.get("file") or f"{result['split']} split of {(meta.get('corpus') or {}).get('path')}"
        click.echo(
            f"{source}: {result['chars']:,} characters, loss {result['loss_nats']:.4f} nats/char "
            f"= {result['bits_per_char']:.4f} bits/char ({result['batch_size']} streams, {seq_length}-character windows)"
        )
    if "novelty" in result:
        click.echo(f"novelty of {novelty_file} against the training split ({result['train_chars']:,} characters):")
        click.echo("  length   not in training text")
        for n, fraction in result["novelty"].items():
            click.echo(f"  {n:6d}   {100 * fraction:6.1f}%")
        if not result["novelty"]:
            click.echo(f"  (the sample is shorter than {NOVELTY_LENGTHS[0]} characters)")


# ----------------------------------------------------------------------------------------- info
def _loss_text(nats, bits):
    return "-" if nats is None else f"{nats:.4f} nats/char = {bits:.4f} bits/char"


def _duration(seconds):
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def machine_info(checkpoint=None, which="best") -> dict:
    """What `charrnn info --machine` shows: this machine, and the plans its shapes got (and why)."""
    from charrnn import parallel, portable
    from charrnn.machine import blas_info, cpu_model
    from charrnn.planner import cache_path, cached_plans, choose_plan

    parallel.pin_blas()
    details = {
        "cpu": cpu_model(),
        "usable_cores": parallel.usable_cores(),
        "thread_budget": parallel.thread_budget(),
        "blas": blas_info(),
        "blas_pinned": bool(parallel._blas_controls()),
        "small_gemm_tile_mnk": parallel.small_gemm_budget(),
        "portable_fallbacks_forced": portable.FORCED,
        "x86_pause": portable.X86,
        "plan_cache": str(cache_path()),
        "plans": cached_plans(),
    }
    if checkpoint is not None:
        model, _, meta = load_model(resolve_checkpoint(checkpoint, which))
        batch, steps = eval_layout(meta)
        details["checkpoint_plan"] = model.plan.to_dict() if "plan" in meta else None
        details["machine_plan"] = choose_plan(model.config, batch, steps, note=note).to_dict()
        details["plans"] = cached_plans()
    return details


def _print_machine(d):
    from charrnn.machine import blas_summary

    pinned = (
        "pinned to 1 thread; charrnn's own threads share the work"
        if d["blas_pinned"]
        else ("not pinnable here: charrnn runs one thread and the BLAS threads as it likes")
    )
    rows = [
        ("cpu", f"{d['cpu']} ({d['usable_cores']} usable cores)"),
        ("blas", f"{blas_summary(d['blas'])}; {pinned}"),
        ("thread budget", d["thread_budget"]),
        (
            "gemm tiling",
            f"blocks of <= {d['small_gemm_tile_mnk']:,} multiply-adds (the BLAS has small-matrix kernels)"
            if d["small_gemm_tile_mnk"]
            else "none (this BLAS has no small-matrix kernels to aim for)",
        ),
        (
            "fallbacks",
            "forced by CHARRNN_PORTABLE=1"
            if d["portable_fallbacks_forced"]
            else ("none (x86: the spin barrier uses PAUSE)" if d["x86_pause"] else "portable spin barrier (no PAUSE)"),
        ),
        ("plan cache", d["plan_cache"]),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':16} {value}")
    if "machine_plan" in d:
        recorded = d["checkpoint_plan"]
        click.echo(
            f"{'checkpoint plan:':16} {Plan.from_dict(recorded).describe() if recorded else '- (none recorded)'}"
            "  (what resuming and evaluating it use)"
        )
        click.echo(
            f"{'machine plan:':16} {Plan.from_dict(d['machine_plan']).describe()}  (what a new run of its shape gets)"
        )
    if not d["plans"]:
        click.echo("plans chosen:    none yet (a run times the splits of its shape at its start, once per machine)")
        return
    click.echo(
        "plans chosen on this machine (a training pass of each split, timed once; delete the cache to time again):"
    )
    for shape, entry in sorted(d["plans"].items()):
        timings = ", ".join(f"{split} {ms:.0f} ms" for split, ms in entry.get("ms_per_pass", {}).items())
        click.echo(f"  {shape:44} {entry.get('split')} x{entry.get('threads')}  ({timings})")


@click.command()
@click.argument("checkpoint", type=click.Path(), required=False)
@click.option(
    "--machine",
    is_flag=True,
    help="describe this machine instead: CPU, BLAS, threads and the plan each shape gets, and why "
    "(with CHECKPOINT: also the plan it recorded and the one its shape gets here, timing "
    "the splits for a few seconds if this machine has not yet)",
)
@_JSON
@WHICH
def info(checkpoint, machine, as_json, which):
    """Describe CHECKPOINT: model, vocabulary, training progress and losses."""
    if machine:
        details = machine_info(checkpoint, which)
        if as_json:
            click.echo(json.dumps(details))
        else:
            _print_machine(details)
        return
    if checkpoint is None:
        raise CharrnnError("info needs a CHECKPOINT (a .npz file or a run directory), or --machine")
    path = resolve_checkpoint(checkpoint, which)
    details = checkpoint_summary(path, *load_model(path))
    if as_json:
        click.echo(json.dumps(details))
        return
    d = details
    rows = [
        ("checkpoint", d["checkpoint"]),
        ("format version", d["format_version"]),
        (
            "model",
            f"{d['cell']}, {d['layers']} layer{'s' if d['layers'] != 1 else ''} x {d['hidden']} hidden, "
            f"dropout {d['dropout']}" + (f", weight drop {d['weight_drop']}" if d["weight_drop"] else ""),
        ),
        ("parameters", f"{d['parameters']:,}"),
        ("plan", Plan.from_dict(d["plan"]).describe() if d["plan"] else "- (written before plans were recorded)"),
        ("vocabulary", f"{d['vocab_size']} symbols ({d['vocab_mode']}): {d['vocab']}"),
        ("iteration", d["iteration"]),
        ("epoch", "-" if d["epoch"] is None else f"{d['epoch']:.2f}"),
        ("val loss", _loss_text(d["val_loss_nats"], d["val_loss_bits"])),
        ("best val loss", _loss_text(d["best_val_loss_nats"], d["best_val_loss_bits"])),
        ("training time", _duration(d["train_seconds"])),
        (
            "corpus",
            d["corpus"]
            if not isinstance(d["corpus_chars"], int)
            else f"{d['corpus']} ({d['corpus_chars']:,} {'bytes' if d['vocab_mode'] == BYTES else 'characters'})",
        ),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':16} {'-' if value is None else value}")
