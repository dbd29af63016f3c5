"""Continuous batching for `charrnn serve`: the samples of many requests advance together, one step at a time.

One engine thread owns the model. Requests (jobs) wait in a queue until the batch has a free row for
each of their samples; between two calls of the compiled sampling loop, finished and cancelled jobs
leave and waiting ones join (after their prime is read), as LLM servers batch requests. Every row
carries its own state, controls and random numbers, so what a job generates does not depend on what
else runs beside it: a row's arithmetic is the same whatever rows surround it (charrnn.sampling).

Random numbers: a job's seed starts one numpy Generator, drawn exactly as `charrnn sample --seed`
draws it (blocks of (min(UNIFORM_BLOCK, characters left), samples)), so a seed gives the text the
command line gives.

Output goes to each job's Outbox, a bounded buffer that the HTTP side drains; a job whose client
does not drain it (more than `outbox_chars` characters waiting) is dropped at once, so one stalled
client never holds back the others. The engine never waits for a client.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.sampling import Sampler, StreamDecoder, initial_prediction

log = logging.getLogger("charrnn.serve")

UNIFORM_BLOCK = 256  # `charrnn sample` draws its uniforms in blocks of this many characters (generate's chunk)
# Characters per call of the compiled loop: joins and leaves happen between calls. 32 rather than 16:
# on this 2-core AMD machine 32 streaming clients got 5.7x and 8.5x one client's characters per second
# (two runs of scripts/bench_serve.py) against 4.8x with 16; a join waits at most one call longer.
DEFAULT_CHUNK = 32
DEFAULT_OUTBOX_CHARS = 1 << 16


class EngineBusy(CharrnnError):
    """Every row of the batch is taken and the queue of waiting jobs is full."""


@dataclass(frozen=True)
class Controls:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    argmax: bool = False


@dataclass(frozen=True)
class Job:
    """What one request asks for, already checked: prime ids (int64), new characters per sample, controls, seed."""

    prime_ids: np.ndarray
    length: int
    controls: Controls
    seed: int
    num_samples: int = 1


class Uniforms:
    """A job's random numbers, (steps, samples) at a time, in the order `charrnn sample --seed` draws them."""

    def __init__(self, seed: int, samples: int, length: int, argmax: bool):
        self.samples, self.left_to_draw, self.argmax = samples, length, argmax
        self.rng = np.random.default_rng(seed)
        self.block = np.zeros((0, samples))

    def take(self, steps: int) -> np.ndarray:
        if self.argmax:  # never read by the loop
            return np.zeros((steps, self.samples))
        parts, needed = [], steps
        while needed:
            if not len(self.block):
                size = min(UNIFORM_BLOCK, self.left_to_draw)
                self.block = self.rng.random((size, self.samples))
                self.left_to_draw -= size
            part, self.block = self.block[:needed], self.block[needed:]
            parts.append(part)
            needed -= len(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Outbox:
    """Text a job produced that its client has not taken yet: (sample, text) pieces, bounded in characters.

    The engine thread puts, the client's side takes; `wake` is called (from the engine thread) when the
    outbox stops being empty or the job ends, so the client need not poll.
    """

    def __init__(self, capacity_chars: int, wake=None):
        self.capacity = capacity_chars
        self.wake = wake or (lambda: None)
        self._lock = threading.Lock()
        self._pieces = []
        self._chars = 0
        self._end = None  # None while running; then ("done", None) or ("error", message)

    def put(self, pieces) -> bool:
        """Adds (sample, text) pieces; False (and nothing added) when that would exceed the capacity."""
        size = sum(len(text) for _, text in pieces)
        with self._lock:
            if self._end is not None:
                return True
            if self._pieces and self._chars + size > self.capacity:  # an empty outbox takes anything (a long prime)
                return False
            was_empty = not self._pieces
            self._pieces.extend(piece for piece in pieces if piece[1])
            self._chars += size
        if was_empty:
            self.wake()
        return True

    def finish(self, error: str | None = None) -> None:
        with self._lock:
            if self._end is not None:
                return
            self._end = ("done", None) if error is None else ("error", error)
        self.wake()

    def take(self):
        """(pieces, end): everything waiting, and how the job ended (None while it runs)."""
        with self._lock:
            pieces, self._pieces, self._chars = self._pieces, [], 0
            return pieces, self._end


class Generation:
    """A job in the engine: its random numbers, decoders, progress and outbox."""

    def __init__(self, job: Job, vocab, outbox: Outbox):
        self.job, self.outbox = job, outbox
        self.uniforms = Uniforms(job.seed, job.num_samples, job.length, job.controls.argmax)
        self.decoders = [StreamDecoder(vocab) for _ in range(job.num_samples)]
        self.left = job.length
        self.cancelled = False
        self.dropped = False  # its client stopped reading and its outbox filled
        self.rows = []  # the batch's row of each sample, while the job runs

    @property
    def samples(self) -> int:
        return self.job.num_samples


class Engine:
    """The batch and the thread that steps it. `submit` and `cancel` may be called from any thread."""

    def __init__(
        self,
        model,
        vocab,
        start_probs=None,
        max_streams: int = 64,
        max_waiting: int | None = None,
        chunk: int = DEFAULT_CHUNK,
        outbox_chars: int = DEFAULT_OUTBOX_CHARS,
        threads: int = 1,
    ):
        if max_streams < 1:
            raise CharrnnError(f"--max-streams must be at least 1, got {max_streams}")
        self.model, self.vocab, self.start_probs = model, vocab, start_probs
        self.max_streams = max_streams
        self.max_waiting = max_streams if max_waiting is None else max_waiting
        self.chunk, self.outbox_chars = chunk, outbox_chars
        self._cond = threading.Condition()
        self._waiting = deque()
        self._running = []
        # The batch: one sampler whose first `_active` rows are the running jobs' samples, packed to the
        # front (a row freed in the middle takes the last one), so each step runs only those rows.
        # `threads` share each step, cut by streams (Sampler's batch_threads: same bits however cut);
        # a lone stream (--max-streams 1) runs the unit split on them instead.
        self._sampler = Sampler(model, max_streams, threads=threads, batch_threads=threads)
        self._owners = [None] * max_streams  # row: (generation, sample)
        self._active = 0
        self._stopping = None  # the message jobs get when the engine stops
        self._thread = None
        self.counts = {"finished": 0, "cancelled": 0, "dropped": 0, "steps": 0}

    # ---------------------------------------------------------------------- any thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="charrnn-engine", daemon=True)
        self._thread.start()

    def stop(self, message: str = "the server is shutting down", wait: bool = True) -> None:
        """Ends every job (their outboxes get `message` as an error) and the thread, after its current step."""
        with self._cond:
            if self._stopping is None:
                self._stopping = message
            self._cond.notify_all()
        if wait and self._thread is not None:
            self._thread.join()

    @property
    def stopped(self) -> bool:
        return self._stopping is not None

    def warm_up(self) -> None:
        """Compiles (or loads from Numba's cache) what a step runs, before any client waits for it."""
        job = Job(np.zeros(1, np.int64), 1, Controls(), 0)
        generation = Generation(job, self.vocab, Outbox(self.outbox_chars))
        self._waiting.append(generation)
        for generation in self._joining():
            self._join(generation)
        self._step()
        self.counts = dict.fromkeys(self.counts, 0)

    def submit(self, job: Job, wake=None, outbox_chars: int | None = None) -> Generation:
        """Queues a job; EngineBusy when the batch and the queue are full, CharrnnError if it can never fit.

        wake() is called from the engine thread when the job's outbox has something new; outbox_chars
        bounds what may wait there (default: the engine's) before the job is dropped.
        """
        if job.num_samples > self.max_streams:
            raise CharrnnError(
                f"num_samples {job.num_samples} is more than this server's --max-streams {self.max_streams}; "
                f"ask for at most {self.max_streams}"
            )
        generation = Generation(job, self.vocab, Outbox(outbox_chars or self.outbox_chars, wake))
        with self._cond:
            if self._stopping is not None:
                raise EngineBusy(self._stopping)
            unclaimed = self._free_rows() - sum(waiting.samples for waiting in self._waiting)
            if len(self._waiting) >= self.max_waiting and unclaimed < job.num_samples:
                raise EngineBusy(
                    f"the server is busy: {self.max_streams - self._free_rows()} of {self.max_streams} streams "
                    f"are generating and {len(self._waiting)} requests wait; retry in a moment"
                )
            self._waiting.append(generation)
            self._cond.notify_all()
        return generation

    def cancel(self, generation: Generation) -> None:
        """Stops a job (its client went away): its rows are free before the next step."""
        with self._cond:
            generation.cancelled = True
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            return {
                "streams": self.max_streams - self._free_rows(),
                "max_streams": self.max_streams,
                "waiting": len(self._waiting),
                "max_waiting": self.max_waiting,
                **self.counts,
            }

    def _free_rows(self) -> int:
        return self.max_streams - self._active

    # ------------------------------------------------------------------- engine thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while self._stopping is None and not self._running and not self._waiting:
                    self._cond.wait()
                if self._stopping is not None:
                    break
                self._leave_cancelled()
                joining = self._joining()
            try:
                for generation in joining:
                    self._join(generation)
                if self._running:
                    self._step()
            except Exception:  # a bug, not a client's doing: say so to everyone in the batch, keep serving
                log.exception("the sampling step failed")
                with self._cond:
                    for generation in list(self._running):
                        self._leave(generation, "the server failed to generate this text (see its log)")
        with self._cond:
            for generation in [*self._running, *self._waiting]:
                generation.outbox.finish(self._stopping)
            self._running, self._waiting = [], deque()

    def _leave_cancelled(self) -> None:
        for generation in [g for g in self._running if g.cancelled]:
            self._leave(generation)
            self.counts["cancelled"] += 1
        for generation in [g for g in self._waiting if g.cancelled]:
            self._waiting.remove(generation)
            generation.outbox.finish("cancelled")
            self.counts["cancelled"] += 1

    def _joining(self) -> list[Generation]:
        """Waiting jobs that fit now, first come first served (one that does not fit waits, and so do those behind it)."""
        joining, free = [], self._free_rows()
        while self._waiting and self._waiting[0].samples <= free:
            generation = self._waiting.popleft()
            free -= generation.samples
            joining.append(generation)
            generation.rows = list(range(self._active, self._active + generation.samples))
            for sample, row in enumerate(generation.rows):
                self._owners[row] = (generation, sample)
            self._active += generation.samples
        self._running.extend(joining)
        return joining

    def _join(self, generation: Generation) -> None:
        """Reads the job's prime into its rows' state and sends the prime text first, as `charrnn sample` prints it."""
        job = generation.job
        state, logits = initial_prediction(self.model, job.prime_ids, self.start_probs)
        for row in generation.rows:
            self._sampler.set_state(state, logits, streams=row)
            self._sampler.set_controls(row, **asdict(job.controls))
        if len(job.prime_ids):
            generation.outbox.put([(s, d.feed(job.prime_ids)) for s, d in enumerate(generation.decoders)])

    def _leave(self, generation: Generation, error: str | None = "cancelled") -> None:
        """Frees the job's rows (the last rows move into them) and ends its outbox with `error` (None: done)."""
        self._running.remove(generation)
        for row in sorted(generation.rows, reverse=True):
            last = self._active - 1
            if row != last:
                self._sampler.copy_stream(last, row)
                owner, sample = self._owners[last]
                owner.rows[sample] = row
                self._owners[row] = (owner, sample)
            self._owners[last] = None
            self._active -= 1
        generation.rows = []
        generation.outbox.finish(error)

    def _step(self) -> None:
        running = list(self._running)
        steps = min(self.chunk, min(generation.left for generation in running))
        uniforms = np.empty((steps, self._active))
        for generation in running:
            uniforms[:, generation.rows] = generation.uniforms.take(steps)
        ids = self._sampler.sample(steps, uniforms, streams=self._active)
        # Each job's ids are taken before any job leaves: leaving moves other jobs' rows.
        owns = [ids[:, generation.rows] for generation in running]
        for generation, own in zip(running, owns):
            generation.left -= steps
            pieces = [(s, decoder.feed(own[:, s])) for s, decoder in enumerate(generation.decoders)]
            if generation.left == 0:
                pieces += [(s, decoder.finish()) for s, decoder in enumerate(generation.decoders)]
            delivered = generation.outbox.put(pieces)
            with self._cond:
                if not delivered:
                    generation.dropped = True
                    self.counts["dropped"] += 1
                    log.warning(
                        "dropped a client that did not read its stream (%d characters waiting)", self.outbox_chars
                    )
                    self._leave(generation, "the client did not read its stream")
                elif generation.left == 0:
                    self.counts["finished"] += 1
                    self._leave(generation, None)
        self.counts["steps"] += steps
