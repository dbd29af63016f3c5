"""Per-step products on one core: charrnn's panel tiles against 4-row tiles alone and the BLAS.

    python scripts/bench_panels.py               # B/2 = 25 rows (a 2-thread batch split) and 50, H in 128,256,512
    python scripts/bench_panels.py --rows 25 --hidden 256 --quick

Each shape is a recurrent step's product as training runs it, timed over 50 steps in a row on one thread:
forward h (rows x H) times W_h (H x 4H), backward dgates (rows x 4H) times W_h^T (4H x H). Three ways:
    panels    charrnn.kernels.panels.panel_product: W packed once, 5- and 4-row tiles (row_tiles)
    4-row     the same panels and 4-row tile, with rows beyond whole 4-row tiles in a zero-padded
              tile of their own (what panel_product did before row_tiles)
    blas      one gemm call per step on the single-threaded BLAS (which packs W at every call)
The three take turns, repetition by repetition, in one process; each rate is the best of the
repetitions (GFLOP/s), and "x 4-row" / "x blas" are the panel rate over the other two. The panel
and 4-row results are checked to be the same bits.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_args, when loaded by path
from bench_args import positive, positive_list  # noqa: E402

from charrnn import machine  # noqa: E402
from charrnn.jit import njit  # noqa: E402
from charrnn.kernels.blas import gemm  # noqa: E402
from charrnn.kernels.panels import (  # noqa: E402
    TILE_ROWS_4,
    packed_weights,
    panel_product,
    product_space,
    product_tile_4,
)
from charrnn.parallel import pin_blas  # noqa: E402

STEPS = 50


@njit
def four_row_steps(out, a, panels, steps):
    """panel_product as it was with 4-row tiles alone, from the same tile, `steps` times."""
    M = a.shape[0]
    P, K, width = panels.shape
    full = M - M % TILE_ROWS_4
    spare_a = np.zeros((TILE_ROWS_4, K), a.dtype)
    spare_out = np.zeros((TILE_ROWS_4, width), a.dtype)
    for _ in range(steps):
        for p in range(P):
            for row in range(0, full, TILE_ROWS_4):
                product_tile_4(out, a, panels[p], row, p * width, False)
            if full < M:
                for r in range(M - full):
                    for k in range(K):
                        spare_a[r, k] = a[full + r, k]
                product_tile_4(spare_out, spare_a, panels[p], 0, 0, False)
                for r in range(M - full):
                    for j in range(width):
                        out[full + r, p * width + j] = spare_out[r, j]


@njit
def panel_steps(out, a, panels, steps):
    for _ in range(steps):
        panel_product(out, a, panels, False)


@njit
def blas_steps(out, a, W, steps):
    for _ in range(steps):
        gemm(out, a, W, 0.0)


WAYS = {"panels": panel_steps, "4-row": four_row_steps, "blas": blas_steps}


def measure(rows, depth, width, repeats):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, depth)).astype(np.float32)
    W = rng.standard_normal((depth, width)).astype(np.float32)
    packed = packed_weights(W, STEPS)
    outs = {name: product_space(rows, W, packed) for name in ("panels", "4-row")}
    outs["blas"] = np.empty((rows, width), np.float32)
    operands = {"panels": packed, "4-row": packed, "blas": W}
    best = dict.fromkeys(WAYS, np.inf)
    for name, driver in WAYS.items():
        driver(outs[name], a, operands[name], 1)  # compiles or loads the cache
    for repeat in range(repeats):
        for name in WAYS if repeat % 2 == 0 else reversed(list(WAYS)):
            start = time.perf_counter()
            WAYS[name](outs[name], a, operands[name], STEPS)
            best[name] = min(best[name], time.perf_counter() - start)
    if not np.array_equal(outs["panels"], outs["4-row"]):
        raise SystemExit(f"panels and 4-row tiles gave different bits for ({rows}x{depth})({depth}x{width})")
    flops = 2.0 * rows * depth * width * STEPS
    return {name: flops / seconds / 1e9 for name, seconds in best.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=positive_list, default=[25, 50], help="comma-separated rows per product")
    parser.add_argument("--hidden", type=positive_list, default=[128, 256, 512], help="comma-separated hidden sizes")
    parser.add_argument("--repeats", type=positive, default=20, help="timings of each way per shape")
    parser.add_argument("--quick", action="store_true", help="3 repetitions: a rough number fast")
    args = parser.parse_args(argv)
    blas = machine.blas_info()
    pin_blas()  # one thread for the BLAS, as in training
    print(f"CPU: {machine.cpu_model()}; BLAS: {machine.blas_summary(blas)}, pinned to 1 thread")
    repeats = 3 if args.quick else args.repeats
    print(
        f"{'product':>24} {'panels':>8} {'4-row':>8} {'blas':>8} {'x 4-row':>8} {'x blas':>7}   GFLOP/s, one core, best of {repeats}"
    )
    for hidden in args.hidden:
        for rows in args.rows:
            for depth, width in ((hidden, 4 * hidden), (4 * hidden, hidden)):
                rates = measure(rows, depth, width, repeats)
                shape = f"({rows}x{depth})({depth}x{width})"
                print(
                    f"{shape:>24} {rates['panels']:8.1f} {rates['4-row']:8.1f} {rates['blas']:8.1f} "
                    f"{rates['panels'] / rates['4-row']:8.2f} {rates['panels'] / rates['blas']:7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
