"""The machine a benchmark runs on, and what its sgemm allows: the GEMM bound.

What machine this is (CPU, cores, the BLAS each engine calls) and what that machine's sgemm does,
measured in a child process of scripts/bench.py like the engines: a large square product, and
each hidden size's per-step recurrent products run whole on the multi-threaded BLAS and split
across threads. From those rates comes the GEMM bound (see `training_products` and `gemm_bound`):
the training rate a step would reach if its matrix products were all it did, each at the rate
measured for its shape.
"""

import math
import re
import time
from typing import NamedTuple

import numpy as np

from charrnn.kernels import GATE_BLOCKS, LSTM

# The benchmarked model: an LSTM of LAYERS layers over VOCAB symbols, trained on B x T windows.
VOCAB = 65
BATCH = 50
STEPS = 100
LAYERS = 2
LARGE_SGEMM = 2048  # the square product whose rate stands for every window-wide product
GEMM_TIMING_S = 0.05  # each sgemm timing repeats the product for about this long (quick: 0.02)
GEMM_TRIALS = 5  # timings per variant, the fastest kept (quick: 3)

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


def round_bound(hidden, machine):
    return gemm_bound(hidden, machine["sgemm_gflops"]["large"]["gflops"], best_step_rates(machine, hidden))


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
