"""Text generation from a trained model: streamed sampling of B streams at once, and beam search.

The per-character work runs in charrnn.kernels.sampling; this module prepares the state (warming
it up on the prime text with the model's own sequence forward), draws the random numbers, and
turns ids into text. Random numbers come from one numpy Generator, drawn in (characters, streams)
order, so a seed gives the same text to the byte whatever the chunk size.

Without a prime there is no context to predict the first character from: like char-rnn, it is
drawn from a start distribution, uniform over the vocabulary unless `start_probs` is given (for
example the corpus's character frequencies), treated as the first step's prediction (so
temperature, top-k, top-p and argmax apply to it too), from a zero state.
"""

from __future__ import annotations

import codecs
import math
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from charrnn.cells import CELLS, input_shift
from charrnn.data import BYTES, known_text
from charrnn.errors import CharrnnError
from charrnn.kernels.panels import PANEL_MIN_STEPS, TILE_ROWS_4, packed_weights
from charrnn.kernels.sampling import (
    pack_unit_columns,
    sample_chunk,
    sample_units,
    sampling_distribution,
    unit_range,
)
from charrnn.kernels.sync import ARRIVAL_STRIDE
from charrnn.parallel import run_parts, usable_cores

PRIME_WINDOW = 512  # the prime is read in windows so a long prime file does not need T-sized work arrays
# A single stream splits its hidden units between threads from this size up. On an idle 2-core
# machine two threads sampled a 2-layer LSTM 1.6x (H=128), 1.4x (256) and 2.0x (512) faster than one.
SPLIT_UNITS_MIN_HIDDEN = 128
# Threads that wait for each other at every layer lose badly when another job holds a core, so with
# the default thread count samplers time their calls on one thread and on several, use the faster,
# and time the other again every PROBE_EVERY calls, on the first PROBE_STEPS steps of that call only
# (the rest runs on the faster count: at H=256 on a quiet 2-core machine, with row_product at 27k
# chars/s on two threads and 18k on one, whole calls on one thread would cost 6.5% of the rate, 64
# steps of a 256-step call 1.6%). What they learn is shared by every sampler of the
# same shape in the process (machine load is the process's, not one sampler's); the first call of a
# shape may include compiling and is not timed. The text does not depend on the thread count, so a
# call may be cut between counts anywhere.
PROBE_EVERY = 8
PROBE_STEPS = 64
# A batch is cut between threads (batch_threads) only where each gets this many streams: two panel tiles.
BATCH_ROWS_PER_THREAD = 8
PROBE_MIN_STEPS = 32  # shorter calls are timed, but do not count
_thread_timings = {}  # (cell, L, H, dtype): {"calls": n, "rates": {threads: characters per second}}

# What the compiled loops (charrnn.kernels.sampling) read, by name. Per-layer fields are tuples of
# arrays; fields a cell does not have are empty arrays. The LN-LSTM's shift_x is its bias_x plus b
# (its b is then zero: it is added after the input's normalisation, not before).
# Both loops' products read W_x (layers above 0), W_h and out_W packed into panels (W_x_panels,
# W_h_panels, out_panels; empty where unused; the unit-split loop's have a leading axis of threads,
# see Sampler._packs). Controls hold one entry per stream: arrays of B.
Net = namedtuple(
    "Net",
    "cell W_x W_h b b_hn gain_x shift_x gain_h shift_h gain_c shift_c out_W out_b W_x_panels W_h_panels out_panels",
)
Controls = namedtuple("Controls", "temperature top_k top_p greedy")
StepWork = namedtuple(
    "StepWork",
    "ids gates h_seq c_seq aux_seq x_hat r_hat c_hat rstd x_product recurrent out_product weights order scratch",
)
UnitWork = namedtuple("UnitWork", "pre rec c_part aux logits weights order scratch")


def compiled_net(model, panels: bool = True):
    """The model's weights as the sampling loop reads them (panels=False: without the batched loop's
    packed copies, for the unit-split loop, which has packs of its own)."""
    cfg, p, dtype = model.config, model.params, model.dtype
    cell, L = CELLS[cfg.cell], cfg.layers
    empty = np.zeros(0, dtype)

    def each(name, fallback=empty):
        return tuple(p.get(f"layer{layer}.{name}", fallback) for layer in range(L))

    if cell.input_bias:
        biases, shift_x = each("b"), each("shift_x")
    else:
        biases = tuple(np.zeros(cfg.gate_width, dtype) for _ in range(L))
        shift_x = tuple(input_shift(p, layer) for layer in range(L))

    def packed(W):
        return packed_weights(W, PANEL_MIN_STEPS if panels else 0)

    return Net(
        cell.code,
        each("W_x"),
        each("W_h"),
        biases,
        each("b_hn", np.zeros(cfg.hidden, dtype)),
        each("gain_x"),
        shift_x,
        each("gain_h"),
        each("bias_h"),
        each("gain_c"),
        each("bias_c"),
        p["out.W"],
        p["out.b"],
        tuple(packed(W) if layer else packed_weights(W, 0) for layer, W in enumerate(each("W_x"))),
        tuple(packed(W) for W in each("W_h")),
        packed(p["out.W"]),
    )


def batch_cuts(streams: int, threads: int) -> list[tuple[int, int]]:
    """(first, last) streams of each thread's share of a batch: whole 4-row panel tiles, at least
    BATCH_ROWS_PER_THREAD each (fewer threads where the batch is small)."""
    parts = max(1, min(threads, streams // BATCH_ROWS_PER_THREAD))
    bounds = [0] + [round(streams * part / parts / TILE_ROWS_4) * TILE_ROWS_4 for part in range(1, parts)] + [streams]
    return list(zip(bounds[:-1], bounds[1:]))


def panel_columns(panels, columns: int) -> int:
    """Columns of a product on these panels (whole panels), or `columns` without panels."""
    return panels.shape[0] * panels.shape[2] if panels.shape[0] else columns


def check_controls(temperature: float, top_k: int, top_p: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise CharrnnError(
            f"temperature must be a number > 0, got {temperature}; lower is more conservative "
            "(e.g. 0.5), and --argmax always takes the most likely character"
        )
    if top_k < 0:
        raise CharrnnError(f"top-k must be >= 0 (0 turns it off), got {top_k}")
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise CharrnnError(f"top-p must be in (0, 1] (1 turns it off), got {top_p}")


def check_length(length: int) -> None:
    if length < 1:
        raise CharrnnError(f"length must be at least 1 character, got {length}")


# ------------------------------------------------------------------------------------ prime text
def encode_prime(vocab, prime, drop_unknown: bool = False, notify: Callable[[str], None] | None = None) -> np.ndarray:
    """Ids of the prime text (str, or bytes), int64; unknown symbols raise or are dropped with a note
    (see charrnn.data.known_text)."""
    notes = []
    prime = known_text(vocab, prime or "", "the prime text", drop_unknown, notes.append)
    if notify is not None:
        left = "" if prime else "; nothing is left, so sampling starts without a prime"
        for note in notes:
            notify(f"{note}{left}")
    return vocab.encode(prime).astype(np.int64)


def warm_up(model, prime_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(state (2, L, 1, H), logits (V,)) after reading the prime from a zero state."""
    state = model.initial_state(1)
    for start in range(0, len(prime_ids), PRIME_WINDOW):
        window = np.asarray(prime_ids[start : start + PRIME_WINDOW], dtype=np.int64).reshape(1, -1)
        _, state = model.forward(window, None, state)
    return state, model.last_logits[-1].copy()


def start_logits(vocab_size: int, start_probs=None, dtype=np.float32) -> np.ndarray:
    """The first prediction without a prime: log start_probs, or uniform."""
    if start_probs is None:
        return np.zeros(vocab_size, dtype)
    malformed = CharrnnError(f"start probabilities must be {vocab_size} non-negative numbers with a positive sum")
    try:
        probs = np.asarray(start_probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise malformed from None  # not numbers at all (e.g. a damaged checkpoint's list)
    if probs.shape != (vocab_size,) or not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.sum() <= 0:
        raise malformed
    with np.errstate(divide="ignore"):
        return np.log(probs / probs.sum()).astype(dtype)


def initial_prediction(model, prime_ids, start_probs=None) -> tuple[np.ndarray, np.ndarray]:
    """(state (2, L, 1, H), logits (V,)) from which the first generated character is drawn."""
    if len(prime_ids):
        return warm_up(model, prime_ids)
    return model.initial_state(1), start_logits(model.config.vocab_size, start_probs, model.dtype)


# -------------------------------------------------------------------------------------- sampler
class Sampler:
    """B streams of one model that sample together in the compiled loop.

    The state, the pending prediction and the controls live here, one of each per stream:
    `sample` continues where it stopped; `set_state`, `set_controls` and `copy_stream` change single
    streams between calls, and `sample(steps, streams=n)` runs only the first n (charrnn serve keeps
    its requests' streams there as they come and go). A stream's text does not depend on which
    others run beside it, so `batch_threads` may cut a batch between threads (see batch_cuts) and
    leave every bit as it was. One stream runs the unit-split loop on `threads` threads (default: timed,
    see PROBE_EVERY); with more than one it reads a packed copy of the weights made at its first
    call, so a sampler sees the weights as they were then (make a new one after training further).
    """

    def __init__(
        self, model, streams: int, temperature=1.0, top_k=0, top_p=1.0, argmax=False, threads=None, batch_threads=1
    ):
        check_controls(temperature, top_k, top_p)
        if streams < 1:
            raise CharrnnError(f"the number of samples must be at least 1, got {streams}")
        if threads is not None and threads < 1:
            raise CharrnnError(f"threads must be at least 1, got {threads}")
        cfg, dtype = model.config, model.dtype
        L, H, GH, V, B = cfg.layers, cfg.hidden, cfg.gate_width, cfg.vocab_size, streams
        if batch_threads < 1:
            raise CharrnnError(f"batch threads must be at least 1, got {batch_threads}")
        self.model, self.streams, self.batch_threads = model, streams, batch_threads
        self._scratch = {}  # each batch thread's draw arrays
        self.controls = Controls(
            np.full(B, float(temperature)), np.full(B, int(top_k)), np.full(B, float(top_p)), np.full(B, bool(argmax))
        )
        cell = CELLS[cfg.cell]
        # One stream runs the unit-split loop (see charrnn.kernels.sampling) on `workers` threads,
        # if its cell can share its units; else the batched loop, whose products read packed panels.
        self.workers = 0
        if streams == 1 and cell.splits_units:
            self.workers = min(H, threads or (min(2, usable_cores()) if H >= SPLIT_UNITS_MIN_HIDDEN else 1))
        self._net = compiled_net(model, panels=not self.workers)
        self.h = np.zeros((L, B, H), dtype)
        self.c = np.zeros((L, B, H), dtype)
        self.logits = np.zeros((B, V), dtype)
        normalised = 1 if cell.work else 0  # the LN-LSTM's normalised rows; nothing for other cells
        net = self._net
        self._work = StepWork(
            ids=np.zeros((B, 1), np.int64),
            gates=np.empty((1, B, GH), dtype),
            h_seq=np.empty((1, B, H), dtype),
            c_seq=np.zeros((1, B, H), dtype),
            aux_seq=np.empty((1, B, H), dtype),
            x_hat=np.empty((1, B, GH * normalised), dtype),
            r_hat=np.empty((1, B, GH * normalised), dtype),
            c_hat=np.empty((1, B, H * normalised), dtype),
            rstd=np.empty((1, B, 3), dtype),
            x_product=np.empty((B, panel_columns(net.W_x_panels[-1], GH) if L > 1 else 0), dtype),
            recurrent=np.empty((B, panel_columns(net.W_h_panels[0], GH)), dtype),
            out_product=np.empty((B, panel_columns(net.out_panels, V)), dtype),
            weights=np.empty(V, np.float64),
            order=np.empty(V, np.int64),
            scratch=np.empty(V, np.int64),
        )
        if self.workers:
            self._unit_work = self._unit_work_arrays(L, H, cfg.gate_width // H, V, dtype)
        self._adaptive = threads is None and self.workers > 1
        if self._adaptive:
            self._timings = _thread_timings.setdefault(
                (cfg.cell, L, H, np.dtype(dtype).name), {"calls": 0, "rates": {}}
            )

    def _unit_work_arrays(self, L, H, G, V, dtype):
        workers = self.workers

        def rows(width, kind=dtype):  # each thread's row starts on its own cache line; one thread may need all H
            return np.zeros((workers, -(-width // 16) * 16), kind)

        return {
            "arrivals": np.zeros(workers * ARRIVAL_STRIDE, np.int64),
            "h_pair": np.zeros((2, L, H), dtype),
            "c": np.zeros((L, H), dtype),
            "arrays": UnitWork(
                pre=rows(G * H),
                rec=rows(G * H),
                c_part=rows(H),
                aux=rows(H),
                logits=rows(V),
                weights=rows(V, np.float64),
                order=rows(V, np.int64),
                scratch=rows(V, np.int64),
            ),
            "packs": {},  # thread count: the weights packed per thread (_packs)
        }

    def _packs(self, workers):
        """The weights as the unit-split loop reads them (see sample_units): layer 0's W_x and every
        bias with the columns of each thread's units together (one thread: as they are), the other
        W_x and every W_h in panels of those columns, and the output layer in panels. The Net's
        W_h and out_W stay as compiled_net made them, unread by that loop (upper layers' W_x are
        empty: the tuple's arrays share one type)."""
        packs = self._unit_work["packs"]
        if workers not in packs:
            net, model = self._net, self.model
            H = self.h.shape[2]

            def columns(W):
                if workers == 1:
                    return W.reshape(1, *W.shape)
                packed = np.zeros((workers, W.shape[0], W.shape[1] // H * -(-H // workers)), W.dtype)
                pack_unit_columns(packed, W, workers, H)
                return packed

            def panels(W):
                by_worker = columns(W)
                G = W.shape[1] // H
                pieces = [
                    packed_weights(by_worker[worker, :, : G * unit_range(worker, workers, H)[1]], PANEL_MIN_STEPS)
                    for worker in range(workers)
                ]
                out = np.zeros((workers, max(len(piece) for piece in pieces), *pieces[0].shape[1:]), W.dtype)
                for worker, piece in enumerate(pieces):
                    out[worker, : len(piece)] = piece
                return out

            layers = range(model.config.layers)
            first_columns = columns(net.W_x[0])
            other = next(iter(packs.values()), None)  # the output layer's panels are every count's
            packs[workers] = net._replace(
                W_x=tuple(first_columns if layer == 0 else first_columns[:, :0] for layer in layers),
                b=tuple(columns(b.reshape(1, -1))[:, 0] for b in net.b),
                W_x_panels=tuple(
                    panels(W) if layer else np.zeros((workers, 0, 0, 0), W.dtype) for layer, W in enumerate(net.W_x)
                ),
                W_h_panels=tuple(panels(W) for W in net.W_h),
                out_panels=other.out_panels if other else packed_weights(net.out_W, PANEL_MIN_STEPS),
            )
        return packs[workers]

    def set_state(self, state: np.ndarray, logits: np.ndarray, streams=slice(None)) -> None:
        """Start the streams (all, or an index or slice) from state (2, L, 1 or B, H) with pending logits (V,) or (B, V)."""
        if isinstance(streams, (int, np.integer)):
            streams = slice(streams, streams + 1)
        self.h[:, streams] = state[0]
        self.c[:, streams] = state[1]
        self.logits[streams] = logits

    def set_controls(self, streams, temperature=1.0, top_k=0, top_p=1.0, argmax=False) -> None:
        """Controls of the streams (an index or slice) from their next character on."""
        check_controls(temperature, top_k, top_p)
        for field, value in zip(self.controls, (float(temperature), int(top_k), float(top_p), bool(argmax))):
            field[streams] = value

    def copy_stream(self, source: int, target: int) -> None:
        """Stream `target` becomes a copy of `source`: state, pending prediction and controls."""
        self.h[:, target] = self.h[:, source]
        self.c[:, target] = self.c[:, source]
        self.logits[target] = self.logits[source]
        for field in self.controls:
            field[target] = field[source]

    def sample(self, steps: int, uniforms: np.ndarray | None = None, streams: int | None = None) -> np.ndarray:
        """The next `steps` ids of the first `streams` streams (default: all B), (steps, streams);
        uniforms (steps, streams) in [0, 1). The other streams stay as they are.

        Streams with argmax do not need uniforms (theirs are ignored).
        """
        n = self.streams if streams is None else streams
        if not 1 <= n <= self.streams:
            raise CharrnnError(f"streams must be from 1 to {self.streams}, got {n}")
        if uniforms is None:
            if not self.controls.greedy[:n].all():
                raise CharrnnError("sampling needs uniforms unless argmax is on")
            uniforms = np.zeros((steps, n))
        uniforms = np.ascontiguousarray(uniforms, dtype=np.float64)
        if uniforms.shape != (steps, n):
            raise CharrnnError(f"uniforms have shape {uniforms.shape}, expected {(steps, n)}")
        out = np.empty((steps, n), np.int64)
        if self.workers:
            self._sample_units(out, uniforms)
            return out
        cuts = batch_cuts(n, self.batch_threads)
        run_parts(
            [partial(self._sample_rows, part, first, last, out, uniforms) for part, (first, last) in enumerate(cuts)]
        )
        return out

    def _sample_rows(self, part, first, last, out, uniforms):
        """The batched loop over streams first..last-1 (their own rows of every array; scratch of their own)."""
        rows = slice(first, last)
        if part not in self._scratch:
            self._scratch[part] = tuple(
                np.empty_like(getattr(self._work, name)) for name in ("weights", "order", "scratch")
            )
        weights, order, scratch = self._scratch[part]
        work = self._work._replace(
            **{name: getattr(self._work, name)[rows] for name in ("ids", "x_product", "recurrent", "out_product")},
            **{name: getattr(self._work, name)[:, rows] for name in self._STEP_ROWS},
            weights=weights,
            order=order,
            scratch=scratch,
        )
        controls = Controls(*(field[rows] for field in self.controls))
        h, c = self.h[:, rows], self.c[:, rows]
        sample_chunk(out[:, rows], uniforms[:, rows], self.logits[rows], h, c, self._net, controls, work)

    _STEP_ROWS = ("gates", "h_seq", "c_seq", "aux_seq", "x_hat", "r_hat", "c_hat", "rstd")

    def _thread_counts_for_next_call(self, steps):
        """[(workers, steps), ...]: the thread counts this call runs on, in turn (see PROBE_EVERY)."""
        if not self._adaptive:
            return [(self.workers, steps)]
        self._timings["calls"] += 1
        rates = self._timings["rates"]
        for candidate in (self.workers, 1):
            if candidate not in rates:
                return [(candidate, steps)]
        faster, slower = sorted(rates, key=rates.get, reverse=True)
        if self._timings["calls"] % PROBE_EVERY:
            return [(faster, steps)]
        if steps >= PROBE_STEPS + PROBE_MIN_STEPS:
            return [(slower, PROBE_STEPS), (faster, steps - PROBE_STEPS)]
        return [(slower, steps)]

    def _sample_units(self, out, uniforms):
        first = 0
        for workers, steps in self._thread_counts_for_next_call(len(out)):
            rows = slice(first, first + steps)
            packs = self._packs(workers)  # packed on a count's first use, which is not what a rate is of
            started = time.perf_counter()
            self._run_units(workers, packs, out[rows], uniforms[rows])
            if self._adaptive and steps >= PROBE_MIN_STEPS and self._timings["calls"] > 1:
                self._timings["rates"][workers] = steps / max(time.perf_counter() - started, 1e-9)
            first += steps

    def _run_units(self, workers, packs, out, uniforms):
        work = self._unit_work
        work["arrivals"][:] = 0
        work["h_pair"][0] = self.h[:, 0]
        work["c"][...] = self.c[:, 0]
        arrays = work["arrays"]
        arrays.logits[:, : self.logits.shape[1]] = self.logits[0]
        shared = (
            work["arrivals"],
            out,
            uniforms,
            work["h_pair"],
            work["c"],
            packs,
            self.controls,
            arrays,
        )
        run_parts([partial(sample_units, worker, workers, *shared) for worker in range(workers)])
        self.h[:, 0] = work["h_pair"][len(out) % 2]
        self.c[:, 0] = work["c"]
        self.logits[0] = arrays.logits[0, : self.logits.shape[1]]

    def next_distribution(self, stream: int = 0) -> np.ndarray:
        """The distribution (V,) float64 the next character of `stream` is drawn from."""
        temperature, top_k, top_p, greedy = (field[stream] for field in self.controls)
        row = self.logits[stream]
        probs = np.empty(row.shape[0], np.float64)
        if greedy:
            probs[:] = 0.0
            probs[int(np.argmax(row))] = 1.0
            return probs
        sampling_distribution(probs, row, temperature, top_k, top_p, self._work.order, self._work.scratch)
        return probs


class StreamDecoder:
    """Ids to text, chunk by chunk; a bytes vocabulary's UTF-8 characters may straddle chunks."""

    def __init__(self, vocab):
        self.vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if vocab.mode == BYTES else None

    def feed(self, ids) -> str:
        if self._decoder is None:
            return self.vocab.decode(ids)
        return self._decoder.decode(self.vocab.decode_bytes(ids))

    def finish(self) -> str:
        return "" if self._decoder is None else self._decoder.decode(b"", final=True)


def decode_text(vocab, ids) -> str:
    decoder = StreamDecoder(vocab)
    return decoder.feed(ids) + decoder.finish()


# ------------------------------------------------------------------------------------- generate
def generate(
    model,
    vocab,
    length: int,
    temperature: float = 1.0,
    prime="",
    seed=None,
    top_k: int = 0,
    top_p: float = 1.0,
    argmax: bool = False,
    num_samples: int = 1,
    chunk: int = 256,
    drop_unknown: bool = False,
    start_probs=None,
    notify: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> Iterator[tuple[int, str]]:
    """Samples `num_samples` texts of `length` new characters each, as (stream_index, text) pieces.

    Each stream's pieces come in order, prime first; stream 0 streams as it is generated, the
    others (generated alongside it, in the same compiled loop) follow one after another. A single
    stream shares its work among `threads` threads (default: see Sampler).
    Arguments are checked here, before the first piece is asked for.
    """
    check_length(length)
    check_controls(temperature, top_k, top_p)
    if num_samples < 1:
        raise CharrnnError(f"the number of samples must be at least 1, got {num_samples}")
    if chunk < 1:
        raise CharrnnError(f"chunk must be at least 1, got {chunk}")
    if len(vocab) != model.config.vocab_size:
        raise CharrnnError(f"the vocabulary has {len(vocab)} symbols but the model expects {model.config.vocab_size}")
    prime_ids = encode_prime(vocab, prime, drop_unknown, notify)
    sampler = Sampler(model, num_samples, temperature, top_k, top_p, argmax, threads)
    sampler.set_state(*initial_prediction(model, prime_ids, start_probs))
    rng = np.random.default_rng(seed)
    return _generate_pieces(sampler, vocab, prime_ids, length, chunk, rng, argmax)


def _generate_pieces(sampler, vocab, prime_ids, length, chunk, rng, argmax):
    streams = sampler.streams
    first = StreamDecoder(vocab)
    if len(prime_ids):
        yield 0, first.feed(prime_ids)
    later = [[] for _ in range(streams - 1)]
    for start in range(0, length, chunk):
        steps = min(chunk, length - start)
        uniforms = None if argmax else rng.random((steps, streams))
        ids = sampler.sample(steps, uniforms)
        yield 0, first.feed(ids[:, 0])
        for stream in range(1, streams):
            later[stream - 1].append(ids[:, stream].copy())
    tail = first.finish()
    if tail:
        yield 0, tail
    for stream in range(1, streams):
        decoder = StreamDecoder(vocab)
        if len(prime_ids):
            yield stream, decoder.feed(prime_ids)
        for ids in later[stream - 1]:
            yield stream, decoder.feed(ids)
        tail = decoder.finish()
        if tail:
            yield stream, tail


def generate_text(model, vocab, length: int, **options) -> list[str]:
    """Whole texts (prime included) of every sample; see generate for the options."""
    texts = [""] * options.get("num_samples", 1)
    for stream, piece in generate(model, vocab, length, **options):
        texts[stream] += piece
    return texts


# ---------------------------------------------------------------------------------- beam search
def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max(axis=-1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def beam_search_ids(model, prime_ids, length: int, beam_width: int, start_probs=None) -> tuple[np.ndarray, float]:
    """(ids (length,), log-probability in nats) of the best continuation that beam search finds.

    The beam's hypotheses run as B streams of Model.step. Candidates are ranked by total
    log-probability, ties by (parent rank, character id), so a width of 1 is greedy argmax.
    """
    check_length(length)
    if beam_width < 1:
        raise CharrnnError(f"beam width must be at least 1, got {beam_width}")
    state, logits = initial_prediction(model, np.asarray(prime_ids, dtype=np.int64), start_probs)
    V = model.config.vocab_size
    scores = np.zeros(1)
    history = np.zeros((1, 0), np.int64)
    step_log_probs = log_softmax(logits)[None, :]
    for position in range(length):
        candidates = (scores[:, None] + step_log_probs).reshape(-1)
        best = np.argsort(-candidates, kind="stable")[:beam_width]
        parents, chars = best // V, best % V
        scores = candidates[best]
        history = np.concatenate([history[parents], chars[:, None]], axis=1)
        if position + 1 < length:
            state = np.ascontiguousarray(state[:, :, parents])
            step_log_probs = log_softmax(model.step(chars, state))
    return history[0], float(scores[0])


def beam_search(
    model,
    vocab,
    prime,
    length: int,
    beam_width: int,
    drop_unknown: bool = False,
    start_probs=None,
    notify: Callable[[str], None] | None = None,
) -> str:
    """The prime followed by the most likely `length`-character continuation beam search finds."""
    prime_ids = encode_prime(vocab, prime, drop_unknown, notify)
    ids, _ = beam_search_ids(model, prime_ids, length, beam_width, start_probs)
    return decode_text(vocab, np.concatenate([prime_ids, ids]))
