"""`charrnn sample CKPT`: stream generated text to stdout (or a file) as UTF-8."""

import contextlib
import sys
from pathlib import Path

import click

from charrnn.checkpoint import resolve_checkpoint
from charrnn.commands import WHICH, note
from charrnn.data import BYTES, read_text_file
from charrnn.errors import CharrnnError, OutputClosed
from charrnn.sampling import beam_search, check_controls, check_length, generate
from charrnn.saved import load_model, start_probabilities


@contextlib.contextmanager
def _output_stream(output):
    if output is None:
        yield sys.stdout.buffer
        return
    try:
        file = open(output, "wb")
    except OSError as error:
        raise CharrnnError(f"cannot write {output} ({error.strerror or error}); check the path") from None
    with file:
        yield file


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--temperature",
    "-t",
    default=1.0,
    show_default=True,
    type=float,
    help="divide the logits by this; lower is more conservative and repetitive, higher more varied",
)
@click.option("--argmax", is_flag=True, help="always take the most likely character (deterministic)")
@click.option(
    "--length", "-n", default=2000, show_default=True, type=int, help="characters to generate after the prime"
)
@click.option("--prime", default=None, help="text to start from (it is printed first)")
@click.option("--prime-file", default=None, type=click.Path(), help="read the prime text from this file")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="random seed: the same seed gives the same text")
@click.option(
    "--top-k", default=0, show_default=True, type=int, help="sample only among the k most likely characters (0 = off)"
)
@click.option(
    "--top-p",
    default=1.0,
    show_default=True,
    type=float,
    help="sample only among the most likely characters whose probabilities add up to p (1 = off)",
)
@click.option(
    "--num-samples",
    default=1,
    show_default=True,
    type=int,
    help="independent samples, generated together and printed one after another",
)
@click.option(
    "--beam", default=None, type=int, help="beam search with this width for the most likely text instead of sampling"
)
@click.option(
    "--output", "-o", default=None, type=click.Path(dir_okay=False), help="write to this file instead of stdout"
)
@click.option("--drop-unknown", is_flag=True, help="drop prime characters the model never saw instead of failing")
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="threads sharing one sample's work [default: 1 or 2, whichever runs faster here, from 128 hidden units up]",
)
@WHICH
def sample(
    checkpoint,
    temperature,
    argmax,
    length,
    prime,
    prime_file,
    seed,
    top_k,
    top_p,
    num_samples,
    beam,
    output,
    drop_unknown,
    threads,
    which,
):
    """Generate text from CHECKPOINT (a checkpoint file, or a run directory's best checkpoint).

    Without a prime the first character is drawn uniformly from the vocabulary (from the corpus's
    character frequencies if the checkpoint records them as "unigram").
    """
    check_length(length)
    check_controls(temperature, top_k, top_p)
    if num_samples < 1:
        raise CharrnnError(f"--num-samples must be at least 1, got {num_samples}")
    if prime is not None and prime_file is not None:
        raise CharrnnError("--prime and --prime-file both give the prime text; use one of them")
    if beam is not None:
        if beam < 1:
            raise CharrnnError(f"--beam must be at least 1, got {beam}")
        if argmax or top_k or top_p < 1.0 or temperature != 1.0 or num_samples != 1:
            raise CharrnnError(
                "--beam finds the single most likely text; drop --argmax, --temperature, "
                "--top-k, --top-p and --num-samples"
            )
    # Read as bytes, before the model loads: a missing file fails early, and the prime's decoding
    # (UTF-8 without a byte-order mark, for a utf-8 model) is encode_prime's, whatever the source.
    prime_text = read_text_file(prime_file, BYTES, "the prime file") if prime_file is not None else (prime or "")

    source = resolve_checkpoint(checkpoint, which)
    if output is not None and Path(output).is_file() and Path(output).samefile(source):
        raise CharrnnError(f"--output {output} is the checkpoint being sampled; write the text to another file")
    model, vocab, meta = load_model(source)
    start_probs = start_probabilities(meta, len(vocab), note)
    # Everything that can be refused (the prime above all) is checked before --output is opened,
    # so a refused command leaves an existing output file as it was.
    if beam is not None:
        text = beam_search(model, vocab, prime_text, length, beam, drop_unknown, start_probs, notify=note)
        with _output_stream(output) as out:
            _write(out, text + ("" if text.endswith("\n") else "\n"))
        return
    pieces = generate(
        model,
        vocab,
        length,
        temperature=temperature,
        prime=prime_text,
        seed=seed,
        top_k=top_k,
        top_p=top_p,
        argmax=argmax,
        num_samples=num_samples,
        drop_unknown=drop_unknown,
        start_probs=start_probs,
        notify=note,
        threads=threads,
    )
    with _output_stream(output) as out:
        _write_samples(out, pieces, num_samples)


def _write_samples(out, pieces, num_samples):
    current, ends_with_newline = 0, True
    for stream, text in pieces:
        if stream != current:
            separator = "" if ends_with_newline else "\n"
            _write(out, f"{separator}----- sample {stream + 1} of {num_samples} -----\n")
            current, ends_with_newline = stream, True
        if text:
            _write(out, text)
            ends_with_newline = text.endswith("\n")
    if not ends_with_newline:
        _write(out, "\n")


def _write(out, text):
    # Bytes, not text: the output is UTF-8 whatever the locale says about the terminal.
    try:
        out.write(text.encode("utf-8"))
        out.flush()
    except BrokenPipeError:
        raise OutputClosed from None
