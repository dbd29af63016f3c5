"""`charrnn corpus NAME`: fetch a known corpus (verified download) or build the offline one."""

import click

from charrnn.corpora import CORPORA, default_corpus_path, fetch_corpus


@click.command()
@click.argument("name", required=False, type=click.Choice(sorted(CORPORA) + ["default"]))
@click.option(
    "--dest",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="directory that receives <name>/input.txt",
)
@click.option("--url", default=None, help="download from this address instead (a mirror); the checksum still applies")
@click.option("--list", "list_only", is_flag=True, help="list the known corpora and exit")
def corpus(name, dest, url, list_only):
    """Get a training corpus and print its path.

    'tinyshakespeare' is downloaded and checked against a pinned sha256 (copied instead from
    $CHARRNN_DATA/tinyshakespeare/input.txt when that file has the checksum); 'python-stdlib' is
    built offline from this machine's Python standard library; 'default' picks a Tiny Shakespeare
    already on disk ($CHARRNN_DATA/tinyshakespeare/input.txt, else data/tinyshakespeare/input.txt),
    else builds python-stdlib in data/, and never uses the network.
    """
    if list_only or name is None:
        for spec in CORPORA.values():
            click.echo(f"{spec.name:16} {spec.description}")
        click.echo(f"{'default':16} tinyshakespeare if already on disk, else python-stdlib (offline)")
        return
    path = default_corpus_path() if name == "default" else fetch_corpus(name, dest, url=url)
    click.echo(str(path))
