"""Training and sampling speed of charrnn's float32 LSTM, side by side with PyTorch CPU.

    python scripts/bench.py                      # 2 layers x H in 128,256,512, B=50, T=100, V=65
    python scripts/bench.py --hidden 128 --quick
    python scripts/bench.py --json --rounds 3    # one JSON object per hidden size
    python scripts/bench.py --machine-only       # the machine and its sgemm rates, no training

Each (engine, hidden size) measurement runs in its own child process, charrnn then torch for one
size before the next, so the two sides of a ratio see nearly the same machine load, each peak RSS
(ru_maxrss) belongs to one engine and one size, and torch never shares a process with charrnn.
Both children get the same thread count: the OpenBLAS budget for charrnn (OPENBLAS_NUM_THREADS),
torch.set_num_threads for torch. With --rounds R the pair runs R times, alternating, and the
medians over rounds are reported: on a shared machine that evens out other jobs' bursts.

A training iteration is forward + backward + clip_grad_norm + Adam step on one B x T window; its
rate is the median over the timed iterations after warm-up. Sampling is one stream, one character
at a time, temperature 1: charrnn.sampling.generate (its compiled loop, on as many threads as it
picks by default, at most --threads; "1-thread" forces one) when it exists, else a Python loop over
Model.step; torch is a Python loop with torch.multinomial under no_grad, on --threads threads.
"compile" is charrnn's first training call: loading Numba's cache, or with --cold compiling from
scratch into an empty cache directory, plus allocating the work arrays.

Before the results it says what machine this is (CPU, cores, the BLAS each engine calls) and what
that machine's sgemm does, measured in a child process like the engines: a large square product,
and each hidden size's per-step recurrent products run whole on the multi-threaded BLAS and split
across threads. From those rates comes the GEMM bound (see `training_products` and `gemm_bound`):
the training rate a step would reach if its matrix products were all it did, each at the rate
measured for its shape; "of bound" in the table is an engine's training rate divided by it. The
rates the bound is computed from are measured again for each size and round, in a child process
just before that round's engines, so a bound and the rates set against it see the same machine
load (on a shared VM the large-product rate alone moved 141-178 GFLOP/s between runs); "bound c/s"
is the median of a size's per-round bounds and "of bound" the median of its per-round fractions.
The rates printed before the table are the first measurement's.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

from charrnn.kernels import GATE_BLOCKS, LSTM

try:
    import resource
except ImportError:  # Windows
    resource = None

VOCAB = 65
BATCH = 50
STEPS = 100
LAYERS = 2
CLIP = 5.0
LR = 2e-3
TRAIN_BUDGET_S = 12.0  # per engine and size: stop timing iterations after this (at least 3 run)
SAMPLE_BUDGET_S = 2.0
LARGE_SGEMM = 2048  # the square product whose rate stands for every window-wide product
GEMM_TIMING_S = 0.05  # each sgemm timing repeats the product for about this long (quick: 0.02)
GEMM_TRIALS = 5  # timings per variant, the fastest kept (quick: 3)


def peak_rss_mb():
    if resource is None:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0**2 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def random_batches(count, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(count, BATCH, STEPS + 1), dtype=np.int32)  # BatchLoader's dtype
    return [(window[:, :-1], window[:, 1:]) for window in ids]


def median_seconds(function, iterations, budget_s):
    """Median duration of up to `iterations` calls; stops early once `budget_s` is spent (min 3)."""
    times = []
    started = time.perf_counter()
    while len(times) < iterations and (len(times) < 3 or time.perf_counter() - started < budget_s):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), len(times)


def first_call_seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def sample_rate(sample_chunk, max_chars):
    """Characters per second of `sample_chunk(n)` calls, within SAMPLE_BUDGET_S or max_chars."""
    sample_chunk(8)  # compiles and allocates outside the clock
    done, chunk = 0, 50
    start = time.perf_counter()
    while done < max_chars and time.perf_counter() - start < SAMPLE_BUDGET_S:
        chunk = min(chunk, max_chars - done)
        sample_chunk(chunk)
        done += chunk
        chunk *= 2
    return done / (time.perf_counter() - start)


# ------------------------------------------------------------------------------- the GEMM bound
STEP_FORWARD, STEP_BACKWARD, WINDOW = "step_forward", "step_backward", "window"
KIND_LABELS = {STEP_FORWARD: "forward step", STEP_BACKWARD: "backward step"}


class Product(NamedTuple):
    """A matrix product of a training step: (m x k) @ (k x n), `calls` times per window."""

    what: str
    m: int
    k: int
    n: int
    calls: int
    kind: str  # STEP_FORWARD / STEP_BACKWARD: one per step, in sequence; WINDOW: over all T*B rows

    @property
    def flops(self):
        return 2 * self.m * self.k * self.n * self.calls


def training_products(hidden, layers=LAYERS, gates=GATE_BLOCKS[LSTM], vocab=VOCAB, batch=BATCH, steps=STEPS):
    """The matrix products of one training window (forward + backward), as charrnn.model runs them.

    With H units, G = 4 gate blocks, L layers, V symbols and R = T*B rows (characters), per window:
      forward   h_{t-1} W_h, per layer and step      (B x H)(H x GH)   T*L calls  2·G·H² per char, L times
                x W_x, layers 1..L-1 (layer 0's is a row gather of W_x, no product)
                                                     (R x H)(H x GH)   L-1 calls  2·G·H² per char, L-1 times
                h W_out, the output layer            (R x H)(H x V)    1 call     2·H·V per char
      backward  dh_{t-1} = dgates W_hᵀ, per layer and step
                                                     (B x GH)(GH x H)  T*L calls  2·G·H² per char, L times
                dW_h = h_{t-1}ᵀ dgates, per layer    (H x R)(R x GH)   L calls    2·G·H² per char, L times
                dW_x = xᵀ dgates, layers 1..L-1      (H x R)(R x GH)   L-1 calls  2·G·H² per char, L-1 times
                dx = dgates W_xᵀ, layers 1..L-1      (R x GH)(GH x H)  L-1 calls  2·G·H² per char, L-1 times
                dW_out = hᵀ dlogits                  (H x R)(R x V)    1 call     2·H·V per char
                dh = dlogits W_outᵀ                  (R x V)(V x H)    1 call     2·H·V per char
    (dW_h is two calls in charrnn, h0's B rows and the other (T-1)*B; the flops are the same.)
    Per character: sequential 4·G·L·H², window-wide 2·G·L·H² + 6·G·(L-1)·H² + 6·H·V. For the
    benchmarked LSTM (G=4, L=2): 32·H² + 40·H² + 6·H·V = 72·H² + 6·H·V, the README's figure.
    """
    H, GH, R = hidden, gates * hidden, batch * steps
    products = [
        Product("h W_h", batch, H, GH, steps * layers, STEP_FORWARD),
        Product("x W_x", R, H, GH, layers - 1, WINDOW),
        Product("h W_out", R, H, vocab, 1, WINDOW),
        Product("dgates W_h^T", batch, GH, H, steps * layers, STEP_BACKWARD),
        Product("dW_h", H, R, GH, layers, WINDOW),
        Product("dW_x", H, R, GH, layers - 1, WINDOW),
        Product("dgates W_x^T", R, GH, H, layers - 1, WINDOW),
        Product("dW_out", H, R, vocab, 1, WINDOW),
        Product("dlogits W_out^T", R, vocab, H, 1, WINDOW),
    ]
    return [product for product in products if product.calls > 0]


def step_shape(hidden, kind):
    """(m, k, n) of the per-step product of `kind` at this hidden size."""
    return next((p.m, p.k, p.n) for p in training_products(hidden) if p.kind == kind)


def flops_per_char(hidden):
    return sum(product.flops for product in training_products(hidden)) / (BATCH * STEPS)


def gemm_bound(hidden, large_gflops, step_gflops):
    """Training characters/s if every product of the window ran at its measured rate and nothing
    else took time: per-step products at the rate measured for their shape (step_gflops, by kind),
    window-wide ones at the large square product's. None without the rates."""
    if not large_gflops or not all(step_gflops.get(kind) for kind in (STEP_FORWARD, STEP_BACKWARD)):
        return None
    seconds = sum(
        product.flops / (1e9 * (large_gflops if product.kind == WINDOW else step_gflops[product.kind]))
        for product in training_products(hidden)
    )
    return BATCH * STEPS / seconds


# ----------------------------------------------------------------------- sgemm rates on this machine
def compile_repeat_gemm():
    """A compiled loop of `repeats` products through charrnn.kernels.blas, as the kernels call them:
    no per-call dispatch in the timing, and it releases the GIL, so threads run their products at
    once (scipy.linalg.blas.sgemm holds the GIL: two threads of it take twice as long as one)."""
    import numba

    from charrnn.jit import JIT_OPTIONS
    from charrnn.kernels.blas import gemm_tiled

    # A closure, which Numba cannot load from its cache: compiled afresh (about a second), not cached.
    @numba.njit(**{**JIT_OPTIONS, "cache": False})
    def repeat_gemm(out, a, b, tile_mnk, repeats):
        for _ in range(repeats):
            gemm_tiled(out, a, b, 0.0, tile_mnk)

    return repeat_gemm


def fastest_seconds(run, timing_s, trials):
    """(repeats, seconds): the fastest of `trials` timings of run(repeats), repeats sized to ~timing_s."""
    # Warm-up for one timing's length: first touch of the operands, BLAS buffers, the threads
    # woken and the cores up to speed (the first large product runs at a fraction of the rate).
    start = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < timing_s:
        run(1)
        calls += 1
    start = time.perf_counter()
    run(1)
    repeats = max(1, math.ceil(timing_s / max(time.perf_counter() - start, 1e-7)))
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        run(repeats)
        best = min(best, time.perf_counter() - start)
    return repeats, best


def gflops(run, m, k, n, args):
    repeats, seconds = fastest_seconds(run, args.gemm_timing_s, args.gemm_trials)
    return 2.0 * m * k * n * repeats / seconds / 1e9


def operands(m, k, n, rng):
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return np.zeros((m, n), np.float32), a, b


def whole_run(repeat_gemm, out, a, b, tile_mnk):
    return lambda repeats: repeat_gemm(out, a, b, tile_mnk, repeats)


def split_run(repeat_gemm, pieces, tile_mnk, pool):
    """Each (out, a, b) piece on its own thread (the first on this one), all at once."""

    def run(repeats):
        futures = [pool.submit(repeat_gemm, *piece, tile_mnk, repeats) for piece in pieces[1:]]
        repeat_gemm(*pieces[0], tile_mnk, repeats)
        for future in futures:
            future.result()

    return run


def split_rates(repeat_gemm, out, a, b, parts, tile_mnk, pool, args):
    """GFLOP/s of one product cut into `parts` pieces, one per thread, each on a single-threaded
    BLAS (the caller sets that), as charrnn's two training plans cut it (charrnn.plan). "rows":
    slices of the batch's streams, the "batch" plan, whose threads never wait for one another.
    "columns": slices of the output columns, the "units" plan, whose threads meet at a barrier
    once per step; this timing leaves the barrier out.
    """
    from charrnn.parallel import split_rows

    (m, k), n = a.shape, b.shape[1]
    rows = [(out[s], a[s], b) for s in split_rows(m, parts)]
    columns = [(out[:, s], a, b[:, s]) for s in split_rows(n, parts)]
    return {
        "rows": gflops(split_run(repeat_gemm, rows, tile_mnk, pool), m, k, n, args),
        "columns": gflops(split_run(repeat_gemm, columns, tile_mnk, pool), m, k, n, args),
    }


def measure_machine(args):
    """What machine this is and the sgemm rates the GEMM bound needs (runs in a child process).

    Per-step products run as charrnn's kernels call them (gemm_tiled with charrnn's small-matrix
    budget for this BLAS) three ways: "whole", one call on the multi-threaded BLAS, and "rows" and
    "columns" (split_rates); the fastest is the rate measured for that shape.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from charrnn import machine
    from charrnn.parallel import small_gemm_budget, usable_cores

    blas = machine.blas_info()  # first: the thread count the process starts with (charrnn pins it to 1)
    repeat_gemm = compile_repeat_gemm()
    rng = np.random.default_rng(0)
    tile_mnk = small_gemm_budget()
    parts = max(1, args.threads)
    steps = []
    for hidden in args.hidden:
        for kind in (STEP_FORWARD, STEP_BACKWARD):
            m, k, n = step_shape(hidden, kind)
            steps.append(
                {"hidden": hidden, "kind": kind, "shape": [m, k, n], "gflops": {}, "operands": operands(m, k, n, rng)}
            )
    # Each group of timings sets the BLAS's thread count itself (charrnn.parallel pins it to one).
    # The split timings come first: after a multi-threaded call OpenBLAS's own threads spin for a
    # while, and on a machine with few cores they would take cores from the split's threads.
    if parts > 1:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(parts - 1) as pool:
            for step in steps:
                step["gflops"].update(split_rates(repeat_gemm, *step["operands"], parts, tile_mnk, pool, args))
    size = LARGE_SGEMM
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for step in steps:
            step["gflops"]["whole"] = gflops(
                whole_run(repeat_gemm, *step.pop("operands"), tile_mnk), *step["shape"], args
            )
            step["best"] = max(step["gflops"].values())
        out, a, b = operands(size, size, size, rng)
        large = gflops(whole_run(repeat_gemm, out, a, b, 0), size, size, size, args)
    return {
        "cpu": machine.cpu_model(),
        "cores": usable_cores(),
        "blas": blas,
        "blas_summary": machine.blas_summary(blas),
        "tile_mnk": tile_mnk,
        "sgemm_gflops": {"large": {"shape": [size, size, size], "gflops": large}, "steps": steps},
    }


def describe_torch(args):
    """torch's version, BLAS and kernels in one line, from torch.__config__.show()."""
    import torch

    torch.set_num_threads(args.threads)
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[\w.]+)", config)
    capability = re.search(r"CPU capability usage: (\w+)", config)
    parts = [f"MKL {mkl.group(1)}" if mkl else f"BLAS {blas.group(1)}" if blas else "BLAS unknown"]
    if onednn:
        parts.append(f"oneDNN {onednn.group(1)}")
    if capability:
        parts.append(f"{capability.group(1)} kernels")
    parts.append(f"{torch.get_num_threads()} threads")
    return {"torch_blas": f"torch {torch.__version__}: " + ", ".join(parts)}


# ---------------------------------------------------------------------------------------- charrnn
def charrnn_sampler(model, threads=None):
    """(sample_chunk(n), description): the compiled generator, or a Model.step loop without one."""
    try:
        from charrnn.sampling import generate
    except ImportError:
        generate = None
    if generate is not None:
        from charrnn.data import Vocab

        vocab = Vocab([chr(ord("!") + k) for k in range(VOCAB)])

        def sample_chunk(length):
            text = "".join(
                piece for _, piece in generate(model, vocab, length, temperature=1.0, seed=1, threads=threads)
            )
            assert len(text) == length

        return sample_chunk, "charrnn.sampling.generate"

    rng = np.random.default_rng(1)
    state = model.initial_state(1)
    char = np.zeros(1, dtype=np.int64)

    def step_loop(length):
        for _ in range(length):
            logits = model.step(char, state)[0].astype(np.float64)
            cumulative = np.cumsum(np.exp(logits - logits.max()))
            char[0] = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), VOCAB - 1)

    return step_loop, "Model.step loop (charrnn.sampling.generate is missing)"


def run_charrnn(hidden, args):
    from charrnn.model import Model, ModelConfig
    from charrnn.optim import clip_grad_norm, make_optimizer
    from charrnn.plan import Plan

    config = ModelConfig("lstm", vocab_size=VOCAB, hidden=hidden, layers=LAYERS)
    # The parent resolves "auto" (planned_split), so planning's compiling and memory stay out of here.
    plan = Plan(args.plan, max(1, args.threads))
    model = Model(config, dtype=np.float32, plan=plan)
    grads = model.zeros_like_params()
    optimizer = make_optimizer("adam", model.params, LR)
    batches = random_batches(8)
    state = model.initial_state(BATCH)
    position = 0

    def train_step():
        nonlocal state, position
        inputs, targets = batches[position % len(batches)]
        position += 1
        for grad in grads.values():
            grad.fill(0.0)
        _, state = model.loss_and_grads(inputs, targets, state, grads)
        clip_grad_norm(grads, CLIP)
        optimizer.step(model.params, grads)

    first = first_call_seconds(train_step)
    for _ in range(args.warmup):
        train_step()
    seconds, timed = median_seconds(train_step, args.iters, TRAIN_BUDGET_S)
    # One stream uses up to 2 threads by default (charrnn.sampling.Sampler); never more than torch gets.
    sample_chunk, sampler = charrnn_sampler(model, threads=1 if args.threads < 2 else None)
    one_thread_chunk, _ = charrnn_sampler(model, threads=1)
    return {
        "train_chars_per_s": BATCH * STEPS / seconds,
        "timed_iterations": timed,
        "first_call_s": first,
        "sample_chars_per_s": sample_rate(sample_chunk, args.sample_chars),
        "sample_1thread_chars_per_s": sample_rate(one_thread_chunk, args.sample_chars),
        "sampler": sampler,
        "plan": plan.split,
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------ torch
def run_torch(hidden, args):
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lstm = nn.LSTM(VOCAB, hidden, num_layers=LAYERS)  # time-major input, like charrnn's kernels
    head = nn.Linear(hidden, VOCAB)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=LR)
    loss_function = nn.CrossEntropyLoss()
    batches = [
        (
            nn.functional.one_hot(torch.from_numpy(x.T.astype(np.int64)), VOCAB).float(),
            torch.from_numpy(y.T.astype(np.int64)).reshape(-1),
        )
        for x, y in random_batches(8)
    ]
    state = (torch.zeros(LAYERS, BATCH, hidden), torch.zeros(LAYERS, BATCH, hidden))
    position = 0

    def train_step():
        nonlocal state, position
        inputs, targets = batches[position % len(batches)]
        position += 1
        optimizer.zero_grad(set_to_none=False)
        output, (h, c) = lstm(inputs, state)
        loss = loss_function(head(output.reshape(-1, hidden)), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        state = (h.detach(), c.detach())

    first = first_call_seconds(train_step)
    for _ in range(args.warmup):
        train_step()
    seconds, timed = median_seconds(train_step, args.iters, TRAIN_BUDGET_S)

    generator = torch.Generator().manual_seed(1)
    char = torch.zeros(1, dtype=torch.long)
    sample_state = (torch.zeros(LAYERS, 1, hidden), torch.zeros(LAYERS, 1, hidden))

    @torch.no_grad()
    def sample_chunk(length):
        nonlocal char, sample_state
        for _ in range(length):
            x = nn.functional.one_hot(char, VOCAB).float().reshape(1, 1, VOCAB)
            output, sample_state = lstm(x, sample_state)
            probs = torch.softmax(head(output[0, 0]), dim=-1)  # temperature 1
            char = torch.multinomial(probs, 1, generator=generator)

    return {
        "train_chars_per_s": BATCH * STEPS / seconds,
        "timed_iterations": timed,
        "first_call_s": first,
        "sample_chars_per_s": sample_rate(sample_chunk, args.sample_chars),
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------ orchestration
def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def run_child(worker, hiddens, args):
    """Runs `worker` (an engine, "machine" or "torch-info") in a child process; returns its JSON."""
    env = dict(os.environ)
    # The same thread budget for both engines; OpenBLAS reads these when it loads.
    env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        worker,
        "--hidden",
        ",".join(map(str, hiddens)),
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
        "--sample-chars",
        str(args.sample_chars),
        "--threads",
        str(args.threads),
        "--plan",
        args.plan,
    ] + (["--quick"] if args.quick else [])
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-cache-") as cache:
        if args.cold and worker == "charrnn":
            env["NUMBA_CACHE_DIR"] = cache  # an empty cache: the first call compiles everything
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {worker} benchmark for hidden={hiddens} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


WORKERS = {
    "charrnn": lambda args: run_charrnn(args.hidden[0], args),
    "torch": lambda args: run_torch(args.hidden[0], args),
    "machine": measure_machine,
    "torch-info": describe_torch,
}


def worker(args):
    print(json.dumps(WORKERS[args.worker](args)))


def median_of(results, key):
    values = [result[key] for result in results if result is not None]
    return float(np.median(values)) if values else None


def best_step_rates(machine, hidden):
    """{kind: GFLOP/s}: the fastest way measured of running each per-step product at this size."""
    return {step["kind"]: step["best"] for step in machine["sgemm_gflops"]["steps"] if step["hidden"] == hidden}


def step_gflops_record(machine, hidden):
    """{"step_forward": {"shape", "whole", "rows", "columns", "best"}, "step_backward": ...} at this size."""
    return {
        step["kind"]: {"shape": step["shape"], **step["gflops"], "best": step["best"]}
        for step in machine["sgemm_gflops"]["steps"]
        if step["hidden"] == hidden
    }


def fraction(rate, bound):
    return rate / bound if rate is not None and bound else None


def round_bound(hidden, machine):
    return gemm_bound(hidden, machine["sgemm_gflops"]["large"]["gflops"], best_step_rates(machine, hidden))


def median_fraction(results, key, bounds):
    """The median over rounds of each round's rate over that round's bound."""
    fractions = [fraction(result[key], bound) for result, bound in zip(results, bounds) if result is not None]
    fractions = [value for value in fractions if value is not None]
    return float(np.median(fractions)) if fractions else None


def measure(hidden, args, with_torch, machine, torch_blas):
    ours, theirs, bounds = [], [], []
    for _ in range(args.rounds):
        bounds.append(round_bound(hidden, run_child("machine", [hidden], args)))
        ours.append(run_child("charrnn", [hidden], args))
        theirs.append(run_child("torch", [hidden], args) if with_torch else None)
    sgemm = machine["sgemm_gflops"]
    measured = [bound for bound in bounds if bound is not None]
    bound = float(np.median(measured)) if measured else None
    train, torch_train = median_of(ours, "train_chars_per_s"), median_of(theirs, "train_chars_per_s")
    return {
        "hidden": hidden,
        "layers": LAYERS,
        "batch": BATCH,
        "steps": STEPS,
        "vocab": VOCAB,
        "threads": args.threads,
        "rounds": args.rounds,
        "charrnn_train_chars_per_s": train,
        "torch_train_chars_per_s": torch_train,
        "charrnn_sample_chars_per_s": median_of(ours, "sample_chars_per_s"),
        "torch_sample_chars_per_s": median_of(theirs, "sample_chars_per_s"),
        "charrnn_sample_1thread_chars_per_s": median_of(ours, "sample_1thread_chars_per_s"),
        "charrnn_first_call_s": median_of(ours, "first_call_s"),
        "cold_compile": args.cold,
        "sampler": ours[0]["sampler"],
        "plan": ours[0].get("plan"),
        "peak_rss_mb": max(result["peak_rss_mb"] for result in ours),
        "torch_peak_rss_mb": max(result["peak_rss_mb"] for result in theirs) if with_torch else None,
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "blas": machine["blas"],
        "torch_blas": torch_blas,
        "flops_per_char": flops_per_char(hidden),
        "sgemm_gflops": {"large": sgemm["large"]["gflops"], **step_gflops_record(machine, hidden)},
        "bound_chars_per_s": bound,
        "bound_chars_per_s_by_round": bounds,
        "charrnn_fraction_of_bound": median_fraction(ours, "train_chars_per_s", bounds),
        "torch_fraction_of_bound": median_fraction(theirs, "train_chars_per_s", bounds) if with_torch else None,
    }


def format_row(row):
    def number(value, width, digits=0):
        return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    def ratio(a, b):
        return f"{a / b:6.2f}" if a is not None and b else f"{'-':>6}"

    train, torch_train = row["charrnn_train_chars_per_s"], row["torch_train_chars_per_s"]
    sample, torch_sample = row["charrnn_sample_chars_per_s"], row["torch_sample_chars_per_s"]
    return (
        f"{row['hidden']:5d} {row['plan'] or '-':>6} {number(train, 10)} {number(torch_train, 10)} {ratio(train, torch_train)} "
        f"{number(row['bound_chars_per_s'], 10)} {number(row['charrnn_fraction_of_bound'], 8, 2)} "
        f"{number(row['torch_fraction_of_bound'], 8, 2)} "
        f"{number(sample, 11)} {number(torch_sample, 9)} {ratio(sample, torch_sample)} "
        f"{number(row['charrnn_sample_1thread_chars_per_s'], 8)} "
        f"{row['charrnn_first_call_s']:9.2f} {row['peak_rss_mb']:7.0f} {number(row['torch_peak_rss_mb'], 8)}"
    )


TABLE_HEADER = (
    f"{'H':>5} {'plan':>6} {'train c/s':>10} {'torch':>10} {'ratio':>6} {'bound c/s':>10} {'of bound':>8} "
    f"{'torch':>8} {'sample c/s':>11} {'torch':>9} {'ratio':>6} {'1-thread':>8} {'compile s':>9} "
    f"{'RSS MB':>7} {'torch MB':>8}"
)


def planned_split(hidden, args):
    """The split a training run of this shape gets on this machine (timed once, then cached), found
    in this process so the charrnn child measures only training."""
    from charrnn.model import ModelConfig
    from charrnn.planner import choose_plan

    config = ModelConfig("lstm", vocab_size=VOCAB, hidden=hidden, layers=LAYERS)
    note = (lambda message: print(message, file=sys.stderr)) if not args.json else (lambda message: None)
    return choose_plan(config, BATCH, STEPS, note=note, threads=args.threads).split


def hidden_sizes(text):
    return [int(part) for part in text.split(",") if part.strip()]


SGEMM_WAYS = ("whole", "rows", "columns")


def product_shape(m, k, n):
    return f"({m}x{k})({k}x{n})"


def print_machine(machine, torch_blas, args):
    """The header: this machine, its BLAS libraries, and the sgemm rates the bound is made of."""
    blas = machine["blas"] or {}
    print(f"CPU: {machine['cpu']}, {machine['cores']} usable cores")
    where = f" ({blas['filepath']})" if blas.get("filepath") else ""
    print(f"charrnn's BLAS: {machine['blas_summary']}{where}")
    print(f"torch's BLAS: {torch_blas or 'not measured'}")
    tile_mnk = machine["tile_mnk"]
    tiling = f"in blocks of <= {tile_mnk} multiply-adds, as charrnn's kernels" if tile_mnk else "one call"
    split = (
        f"rows/columns: cut into {args.threads} threads, single-threaded BLAS each"
        if args.threads > 1
        else "one thread: no split"
    )
    print(
        f"sgemm GFLOP/s on charrnn's BLAS, fastest of {args.gemm_trials} timings; whole: one call, "
        f"{args.threads}-thread BLAS;\n  {split}; per-step products {tiling}"
    )
    large = machine["sgemm_gflops"]["large"]
    print(f"  {product_shape(*large['shape']):<40} whole {large['gflops']:6.1f}  (the rate of window-wide products)")
    for step in machine["sgemm_gflops"]["steps"]:
        rates = "  ".join(f"{way} {step['gflops'][way]:6.1f}" for way in SGEMM_WAYS if way in step["gflops"])
        print(
            f"  H={step['hidden']:<4} {KIND_LABELS[step['kind']]:<14} {product_shape(*step['shape']):<20} "
            f"{rates}  best {step['best']:6.1f}"
        )
    for hidden in args.hidden:
        products = training_products(hidden)
        sequential = sum(p.flops for p in products if p.kind != WINDOW) / (BATCH * STEPS)
        print(
            f"  H={hidden}: {flops_per_char(hidden) / 1e6:.3f} MFLOP per training character, "
            f"{sequential / 1e6:.3f} of them in per-step products"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=hidden_sizes, default=[128, 256, 512], help="comma-separated sizes")
    parser.add_argument("--iters", type=int, default=None, help="timed training iterations (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations after the first call")
    parser.add_argument("--sample-chars", type=int, default=None, help="most characters sampled for a rate")
    parser.add_argument("--rounds", type=int, default=1, help="alternating charrnn/torch runs per size")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both engines")
    parser.add_argument("--cold", action="store_true", help="compile from an empty Numba cache")
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a rough number fast")
    parser.add_argument("--no-torch", action="store_true", help="charrnn only")
    parser.add_argument(
        "--plan",
        choices=("auto", "batch", "units"),
        default="auto",
        help="charrnn's split between threads (auto: the one a run of the shape gets here)",
    )
    parser.add_argument("--machine-only", action="store_true", help="the machine and its sgemm rates, no training")
    parser.add_argument("--json", action="store_true", help="one JSON object per hidden size")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.iters = args.iters or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.sample_chars = args.sample_chars or (500 if args.quick else 20000)
    args.gemm_timing_s = GEMM_TIMING_S * (0.4 if args.quick else 1.0)
    args.gemm_trials = 3 if args.quick else GEMM_TRIALS
    if args.worker:
        worker(args)
        return

    with_torch = not args.no_torch and torch_available()
    machine = run_child("machine", args.hidden, args)
    torch_blas = run_child("torch-info", args.hidden, args)["torch_blas"] if with_torch else None
    if args.json and args.machine_only:
        print(json.dumps({"machine": machine, "torch_blas": torch_blas}))
    elif not args.json:
        print_machine(machine, torch_blas, args)
    if args.machine_only:
        return
    if not args.json:
        print(
            f"LSTM {LAYERS} layers, B={BATCH}, T={STEPS}, V={VOCAB}, float32, {args.threads} threads, "
            f"median of up to {args.iters} timed iterations, {args.rounds} round(s)"
            + ("" if with_torch else "; torch not measured" + ("" if args.no_torch else " (not installed)"))
        )
        print(TABLE_HEADER)
    sampler = None
    for hidden in args.hidden:
        split = planned_split(hidden, args) if args.plan == "auto" else args.plan
        row = measure(hidden, argparse.Namespace(**{**vars(args), "plan": split}), with_torch, machine, torch_blas)
        sampler = row["sampler"]
        print(json.dumps(row) if args.json else format_row(row), flush=True)
    if not args.json:
        print(
            f"charrnn sampler: {sampler}; compile s: charrnn's first training call "
            + ("compiling into an empty Numba cache" if args.cold else "(Numba cache loads, plus allocation)")
        )
        print(
            "bound c/s: the GEMM bound, training with every matrix product at the rate measured for its "
            "shape and nothing else; of bound: train c/s / bound c/s"
        )


if __name__ == "__main__":
    main()
