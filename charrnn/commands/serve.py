"""`charrnn serve CKPT`: generate text over HTTP for many clients at once (charrnn.serve, charrnn.engine)."""

import errno
import socket

import click

from charrnn.commands import WHICH, note
from charrnn.errors import CharrnnError

DEFAULT_OUTBOX_CHARS = 1 << 16  # charrnn.engine's, which imports numba: not imported before it is needed

INSTALL = "charrnn serve needs the serve extra: pip install -e '.[serve]'"
# Connections uvicorn holds at most (it answers more with a plain 503): far above what the engine takes,
# so that the engine's own JSON 503 is what a busy server says, and still a bound on a flood.
CONNECTIONS_PER_STREAM = 4
MIN_CONNECTIONS = 256
SEND_BUFFER_BYTES = 256 * 1024


def _listening_socket(host, port):
    """A bound, listening socket, so a port in use is one line here rather than uvicorn's log."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise CharrnnError(
            f"cannot listen on {host}: {error.strerror}; pass --host an address of this machine"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Each connection's kernel send buffer is bounded too (accepted sockets inherit it): text streams need
    # little, and a client that stops reading then fills it, and its outbox, in moments rather than megabytes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise CharrnnError(
                f"port {port} on {host} is in use; stop what listens there or pass --port another"
            ) from None
        raise CharrnnError(f"cannot listen on {host} port {port}: {error.strerror or error}") from None
    return sock


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every interface)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="port (0: any free one)")
@click.option(
    "--max-length",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="most characters a request may ask for",
)
@click.option(
    "--max-prime",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=0),
    help="longest prime a request may send",
)
@click.option(
    "--max-streams",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="samples generated at once in the batch; as many requests more may wait, the rest get 503",
)
@click.option(
    "--max-unread",
    default=DEFAULT_OUTBOX_CHARS,
    show_default=True,
    type=click.IntRange(min=1),
    help="characters a streaming client may leave unread before it is dropped (so it never holds up the others)",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="threads sharing each step of the batch, cut by streams (the text is the same) [default: 2, or 1 on one core]",
)
@click.option("--access-log", is_flag=True, help="log every request")
@WHICH
def serve(checkpoint, host, port, max_length, max_prime, max_streams, max_unread, threads, access_log, which):
    """Serve CHECKPOINT over HTTP: a page at /, and POST /v1/generate for programs (streamed or whole).

    Requests arriving together share one batched sampling loop; a seed gives the text
    `charrnn sample --seed` gives.
    """
    try:
        import uvicorn  # noqa: F401

        from charrnn.serve import Limits, create_app
    except ImportError:
        raise CharrnnError(INSTALL) from None
    from charrnn.checkpoint import resolve_checkpoint
    from charrnn.engine import Engine
    from charrnn.parallel import usable_cores
    from charrnn.saved import checkpoint_summary, load_model, start_probabilities

    sock = _listening_socket(host, port)  # first: a port in use is said before any loading
    source = resolve_checkpoint(checkpoint, which)
    model, vocab, meta = load_model(source)
    info = checkpoint_summary(source, model, vocab, meta)
    engine = Engine(
        model,
        vocab,
        start_probabilities(meta, len(vocab), note),
        max_streams=max_streams,
        outbox_chars=max_unread,
        threads=threads or min(2, usable_cores()),
    )
    engine.warm_up()  # compiles (or loads) the kernels before the first client waits for them
    limits = Limits(max_length=max_length, max_prime=max_prime)
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(engine, vocab, info, limits),
        log_level="warning",
        access_log=access_log,
        limit_concurrency=max(MIN_CONNECTIONS, CONNECTIONS_PER_STREAM * 2 * max_streams),
        timeout_graceful_shutdown=2,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # Streams end at once with an error event ("the server is shutting down"), so uvicorn's
            # graceful shutdown finds its connections finishing instead of waiting for long texts.
            engine.stop(wait=False)
            super().handle_exit(sig, frame)

    server = Server(config)
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(
        f"charrnn serve: http://{shown}:{bound_port}/ ({info['cell']} {info['layers']}x{info['hidden']} from {source}; "
        f"{max_streams} streams at once, --max-length {max_length}); Ctrl-C stops it",
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then raises it again: stopping is what was asked
        pass
    click.echo("charrnn serve: stopped")
