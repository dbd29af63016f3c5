"""`charrnn prepare FILE`: a text file's ids written once, for training to read memory-mapped."""

import time

import click


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    type=click.Choice(["utf-8", "bytes"]),
    help="read the file as utf-8 text or as raw bytes",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="directory that receives ids.bin and corpus.json [default: FILE.prepared]",
)
@click.option(
    "--val-frac", default=0.1, show_default=True, type=float, help="validation fraction training takes by default"
)
@click.option("--test-frac", default=0.0, show_default=True, type=float, help="test fraction training takes by default")
def prepare(file, encoding, out, val_frac, test_frac):
    """Prepare FILE for training: its ids in one memory-mappable file.

    One pass counts the symbols and hashes the file, a second writes its ids (uint8, uint16 or uint32,
    little-endian) to DIR/ids.bin and what they are to DIR/corpus.json: vocabulary, encoding, sha256 and
    size of FILE, split fractions. `charrnn train DIR` then starts at once on a corpus of any size.
    """
    from charrnn.prepared import open_prepared, prepare_corpus

    started = time.perf_counter()
    directory = prepare_corpus(file, out, encoding, val_frac, test_frac)
    seconds = time.perf_counter() - started
    corpus = open_prepared(directory, verify=False)
    size = corpus.description["source"]["size"]
    click.echo(
        f"{directory}: {corpus.n_chars:,} {corpus.description['id_dtype']} ids of {len(corpus.vocab)} symbols "
        f"from {size:,} bytes in {seconds:.1f}s ({size / max(seconds, 1e-9) / 1e6:.0f} MB/s)"
    )
