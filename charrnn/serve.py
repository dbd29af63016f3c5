"""The HTTP side of `charrnn serve`: a Starlette app that turns requests into jobs for charrnn.engine.

Endpoints:
    GET  /             a page for a person (page_assets/serve.*, inlined: no network but this server)
    GET  /healthz      {"status": "ok", streams generating, waiting, limits}
    GET  /v1/model     what `charrnn info --json` says about the checkpoint
    POST /v1/generate  {"prime", "length", "temperature", "top_k", "top_p", "argmax", "seed", "num_samples",
                       "drop_unknown", "stream"}: {"samples": [text, ...], "seed": S}; with "stream": true,
                       server-sent events: "start" {"seed", "num_samples", "length"}, then messages
                       {"sample": i, "text": piece} (the prime first, as `charrnn sample` prints it), then
                       "done" {"seed", "characters": [per sample]} or "error" {"error": message}.

Every error is JSON {"error": one line} with a 4xx or 503 status; the messages about the controls and
the prime are the command line's (charrnn.sampling's checks). Without a seed the server picks one and
says which, so any text can be had again, from the server or from `charrnn sample --seed`.

Bounds: a body over `max_body` bytes gets 413 from its Content-Length before any of it is read (or as
soon as a chunked one passes the limit) and the connection is closed; length and prime are capped;
the engine takes `max_streams` samples at once and as many waiting, and refuses more with 503 at once.
A client that goes away is cancelled at once (its rows are free before the next step); one that stops
reading is dropped by the engine when its outbox fills, and its connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
from dataclasses import asdict, dataclass

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from charrnn.engine import Controls, EngineBusy, Job
from charrnn.errors import CharrnnError
from charrnn.page import inlined_page
from charrnn.sampling import check_controls, check_length, encode_prime

DEFAULT_LENGTH = 2000  # `charrnn sample`'s default
MAX_SEED = 2**64 - 1
# Seeds the server picks: below 2**53, so the page's JavaScript numbers hold them exactly.
PICKED_SEED_BELOW = 2**53
EXAMPLE = '{"prime": "ROMEO:", "length": 200, "temperature": 0.8}'


@dataclass(frozen=True)
class Limits:
    max_length: int = 10_000  # characters per sample
    max_prime: int = 10_000  # characters of prime
    max_body: int = 1 << 20  # bytes of request body


class BodyTooLarge(CharrnnError):
    pass


# ------------------------------------------------------------------------------------- requests
FIELDS = ("prime", "length", "temperature", "top_k", "top_p", "argmax", "seed", "num_samples", "drop_unknown", "stream")


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _typed(body, name, kind, default):
    value = body.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 200.0 is 200 to a JSON client
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[kind]
        raise CharrnnError(f"{name} must be {expected}, got {json.dumps(value)}")
    return value


def parse_request(body: bytes, vocab, limits: Limits) -> tuple[Job, bool]:
    """(job, stream) from a /v1/generate body; CharrnnError with the command line's message if it is refused."""
    try:
        request = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise CharrnnError(f"the request body is not valid JSON ({error}); send an object such as {EXAMPLE}") from None
    if not isinstance(request, dict):
        raise CharrnnError(f"the request body must be a JSON object such as {EXAMPLE}")
    unknown = [name for name in request if name not in FIELDS]
    if unknown:
        raise CharrnnError(f"unknown field {json.dumps(unknown[0])} in the request; the fields are {', '.join(FIELDS)}")
    length = _typed(request, "length", int, min(DEFAULT_LENGTH, limits.max_length))
    check_length(length)
    if length > limits.max_length:
        raise CharrnnError(
            f"length {length} is over this server's --max-length {limits.max_length}; "
            f"ask for at most {limits.max_length} characters"
        )
    controls = Controls(
        _typed(request, "temperature", float, 1.0),
        _typed(request, "top_k", int, 0),
        _typed(request, "top_p", float, 1.0),
        _typed(request, "argmax", bool, False),
    )
    check_controls(controls.temperature, controls.top_k, controls.top_p)
    num_samples = _typed(request, "num_samples", int, 1)
    if num_samples < 1:
        raise CharrnnError(f"num_samples must be at least 1, got {num_samples}")
    seed = request.get("seed")
    if seed is None:
        seed = secrets.randbelow(PICKED_SEED_BELOW)
    else:
        seed = _typed(request, "seed", int, None)
        if not 0 <= seed <= MAX_SEED:
            raise CharrnnError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    prime = _typed(request, "prime", str, "")
    if len(prime) > limits.max_prime:  # before encoding it: a long prime is refused without the work
        raise CharrnnError(
            f"the prime is {len(prime):,} characters, over this server's --max-prime {limits.max_prime:,}; "
            "send a shorter prime"
        )
    prime_ids = encode_prime(vocab, prime, _typed(request, "drop_unknown", bool, False))
    return Job(prime_ids, length, controls, seed, num_samples), _typed(request, "stream", bool, False)


async def read_body(request, limit: int) -> bytes:
    """The request's body, refused (BodyTooLarge) by its Content-Length before reading or once it passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body is {int(declared):,} bytes, over this server's limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the request body is over this server's limit of {limit:,} bytes")
    return bytes(body)


# ------------------------------------------------------------------------------------ responses
def error_response(message: str, status: int, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Wakeups:
    """Wake-ups from the engine thread, handed to the event loop together: one call_soon_threadsafe (a
    write to the loop's wake-up pipe) per batch of outboxes that filled, not one per client per step."""

    def __init__(self, loop):
        self.loop = loop
        self._lock = threading.Lock()
        self._pending = []

    def add(self, delivery):  # engine thread
        with self._lock:
            first = not self._pending
            self._pending.append(delivery)
        if first:
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody is left to tell
                self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self):  # event loop
        with self._lock:
            pending, self._pending = self._pending, []
        for delivery in pending:
            delivery.woken()


class Delivery:
    """The asyncio side of a job's outbox: the engine thread's wake-ups become an event on this loop."""

    def __init__(self, wakeups):
        self.wakeups = wakeups
        self.ready = asyncio.Event()
        self.generation = None
        self.on_drop = None  # called on this loop when the engine drops the job (its client stopped reading)

    def wake(self):  # engine thread
        self.wakeups.add(self)

    def woken(self):
        self.ready.set()
        if self.generation.dropped and self.on_drop is not None:
            self.on_drop()

    async def pieces(self):
        """(pieces, end) each time something arrives, until the job ends."""
        while True:
            await self.ready.wait()
            self.ready.clear()  # before taking, so a put after the take wakes us again
            pieces, end = self.generation.outbox.take()
            yield pieces, end
            if end is not None:
                return


def merged(pieces, samples):
    """The text of each sample in `pieces`, in order: [(sample, text)] with one entry per sample that has any."""
    texts = [""] * samples
    for sample, text in pieces:
        texts[sample] += text
    return [(sample, text) for sample, text in enumerate(texts) if text]


async def _cancel_on_disconnect(receive, engine, generation, scope):
    while (await receive())["type"] != "http.disconnect":
        pass
    engine.cancel(generation)
    scope.cancel()


class EventStream:
    """An ASGI response streaming one job as server-sent events; stops the job when the client goes away."""

    def __init__(self, engine, delivery):
        self.engine, self.delivery = engine, delivery

    @staticmethod
    def event(name, data):
        prefix = "" if name == "message" else f"event: {name}\n"
        return f"{prefix}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    async def __call__(self, scope, receive, send):
        try:
            await self._stream(receive, send)
        except asyncio.CancelledError:
            if not self.engine.stopped:
                raise
            # Shutting down, and this client had not read what was sent: uvicorn's grace period is over.

    async def _stream(self, receive, send):
        generation = self.delivery.generation
        job = generation.job
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # a proxy in front must not hold the events back
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        start = {"seed": job.seed, "num_samples": job.num_samples, "length": job.length}
        await send({"type": "http.response.body", "body": self.event("start", start), "more_body": True})
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_cancel_on_disconnect, receive, self.engine, generation, tasks.cancel_scope)
            # A client that stopped reading leaves `send` waiting for it forever: cancelling is the way
            # out, and returning without finishing the response makes uvicorn close the connection.
            self.delivery.on_drop = tasks.cancel_scope.cancel
            characters = [0] * job.num_samples
            async for pieces, end in self.delivery.pieces():
                body = b"".join(
                    self.event("message", {"sample": s, "text": t}) for s, t in merged(pieces, len(characters))
                )
                for sample, text in pieces:
                    characters[sample] += len(text)
                if end == ("done", None):
                    body += self.event("done", {"seed": job.seed, "characters": characters})
                elif end is not None:
                    body += self.event("error", {"error": end[1]})
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": end is None})
            tasks.cancel_scope.cancel()


async def collect(engine, delivery, receive) -> tuple[list[str], tuple | None]:
    """(texts, end) of a job answered in one piece; (partial texts, None) if the client went away first."""
    texts, end = [""] * delivery.generation.samples, None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_cancel_on_disconnect, receive, engine, delivery.generation, tasks.cancel_scope)
        async for pieces, ending in delivery.pieces():
            for sample, text in pieces:
                texts[sample] += text
            end = ending
        tasks.cancel_scope.cancel()
    return texts, end


# ------------------------------------------------------------------------------------------ app
def create_app(engine, vocab, model_info: dict, limits: Limits = Limits()) -> Starlette:
    """The ASGI app; starting it starts the engine's thread and stopping it stops the engine."""
    page = inlined_page("serve.html", "serve.css", "serve.js")

    async def index(request):
        return HTMLResponse(page)

    async def healthz(request):
        return JSONResponse({"status": "ok", **engine.status(), **asdict(limits)})

    async def model(request):
        return JSONResponse(model_info)

    async def generate(request):
        try:
            body = await read_body(request, limits.max_body)
        except BodyTooLarge as error:
            # The rest of the body is never read; closing the connection is the only way past it.
            return error_response(f"{error}; send a shorter prime", 413, {"connection": "close"})
        try:
            job, stream = parse_request(body, vocab, limits)
            delivery = Delivery(request.app.state.wakeups)
            # Answered in one piece, a job's whole text waits in its outbox; streamed, a client that
            # stops reading is dropped once the engine's outbox limit is reached.
            whole = None if stream else job.num_samples * (job.length + len(job.prime_ids) + 16)
            delivery.generation = engine.submit(job, delivery.wake, outbox_chars=whole)
        except EngineBusy as error:
            return error_response(str(error), 503, {"retry-after": "1"})
        except CharrnnError as error:
            return error_response(str(error), 400)
        if stream:
            return EventStream(engine, delivery)
        texts, end = await collect(engine, delivery, request.receive)
        if end is None or end[0] != "done":
            return error_response(end[1] if end else "cancelled", 503)
        return JSONResponse({"samples": texts, "seed": job.seed})

    async def http_error(request, error):
        if error.status_code == 404:
            message = f"no such endpoint {request.method} {request.url.path}; the endpoints are {ENDPOINTS}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; the endpoints are {ENDPOINTS}"
        else:
            message = str(error.detail)
        return error_response(message, error.status_code, getattr(error, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.wakeups = Wakeups(asyncio.get_running_loop())
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/v1/generate", generate, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)


ENDPOINTS = "GET /, GET /healthz, GET /v1/model, POST /v1/generate"
