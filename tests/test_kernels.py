"""Kernels on their own: float32 activations and cells against float64, the BLAS wrapper, the
single-stream matrix-vector product and the spin barrier."""

import threading

import numpy as np
import pytest

from charrnn.jit import njit
from charrnn.kernels.blas import gemm, gemm_tiled
from charrnn.kernels.recurrent import (
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
from charrnn.kernels.sampling import pack_unit_columns, unit_range
from charrnn.kernels.sync import ARRIVAL_STRIDE, arrive_and_wait

GRID = np.concatenate(
    [
        np.linspace(-12.0, 12.0, 400_001),
        np.geomspace(1e-30, 1e-2, 2_000),
        -np.geomspace(1e-30, 1e-2, 2_000),
        [0.0, 9.0, -9.0, 1e30, -1e30, np.inf, -np.inf],
    ]
).astype(np.float32)


def alone(H):
    """The unit-range arguments of a sequence kernel run by one thread over all H units."""
    return 0, H, 0, 1, np.zeros(8, np.int64)


def activations(x):
    """(sigmoid(x), tanh(x)) as the cells compute them, read off a GRU and an RNN with W_h = 0."""
    n = x.size
    dtype = x.dtype
    gates = np.zeros((1, n, 3), dtype)
    gates[0, :, 0] = x
    gru_forward(
        np.empty((1, n, 1), dtype),
        np.empty((1, n, 1), dtype),
        gates,
        np.zeros((1, 3), dtype),
        np.zeros(1, dtype),
        np.zeros((n, 1), dtype),
        0,
        *alone(1),
    )
    rnn_gates = x.reshape(1, n, 1).copy()
    rnn_forward(np.empty((1, n, 1), dtype), rnn_gates, np.zeros((1, 1), dtype), np.zeros((n, 1), dtype), 0, *alone(1))
    return gates[0, :, 0], rnn_gates.reshape(n)


def test_float32_activations_are_within_float32_rounding():
    sigmoid32, tanh32 = activations(GRID)
    assert sigmoid32.dtype == np.float32 and tanh32.dtype == np.float32
    x = GRID.astype(np.float64)
    with np.errstate(over="ignore"):
        exact_sigmoid = 1.0 / (1.0 + np.exp(-x))
    exact_tanh = np.tanh(x)
    assert np.max(np.abs(sigmoid32 - exact_sigmoid)) <= 1e-7
    assert np.max(np.abs(tanh32 - exact_tanh)) <= 1e-7
    # Near zero tanh keeps its relative accuracy (it is x itself to float32 precision).
    small = np.abs(x) < 1e-3
    assert np.max(np.abs(tanh32[small] - exact_tanh[small]) / np.maximum(np.abs(exact_tanh[small]), 1e-38)) <= 2e-7
    assert np.all((sigmoid32 >= 0) & (sigmoid32 <= 1)) and np.all(np.abs(tanh32) <= 1)
    assert tanh32[GRID == np.inf] == 1 and tanh32[GRID == -np.inf] == -1


def test_float32_activations_propagate_nan():
    sigmoid32, tanh32 = activations(np.array([np.nan, 1.0], np.float32))
    assert np.isnan(sigmoid32[0]) and np.isnan(tanh32[0])
    assert np.isfinite(sigmoid32[1]) and np.isfinite(tanh32[1])


def test_float64_activations_are_exact():
    x = np.linspace(-20, 20, 2001)
    sigmoid64, tanh64 = activations(x)
    np.testing.assert_allclose(sigmoid64, 1.0 / (1.0 + np.exp(-x)), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(tanh64, np.tanh(x), rtol=1e-15, atol=0)


def cell_problem(cell, T=5, B=3, H=16, seed=0):
    """Random inputs for one layer's kernels (float64), scaled so the gates are not saturated."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    rng = np.random.default_rng(seed)
    return {
        "gates": rng.normal(0, 1.0, (T, B, G * H)),
        "W_h": rng.normal(0, 0.3, (H, G * H)),
        "b_hn": rng.normal(0, 0.5, H),
        "h0": rng.normal(0, 0.5, (B, H)),
        "c0": rng.normal(0, 0.5, (B, H)),
        "dh_seq": rng.normal(0, 1.0, (T, B, H)),
        "dh_last": rng.normal(0, 1.0, (B, H)),
        "dc_last": rng.normal(0, 1.0, (B, H)),
    }


def run_cell(cell, problem, dtype, tile_mnk):
    """Forward then backward of one layer in `dtype`; returns every output array as float64."""
    p = {k: np.array(v, dtype=dtype) for k, v in problem.items()}
    T, B, GH = p["gates"].shape
    H = p["h0"].shape[1]
    gates = p["gates"]
    h_seq, c_seq, aux = np.empty((T, B, H), dtype), np.zeros((T, B, H), dtype), np.empty((T, B, H), dtype)
    W_h_T = np.ascontiguousarray(p["W_h"].T)
    dgates_x, dh0, dc0 = np.empty((T, B, GH), dtype), np.empty((B, H), dtype), np.empty((B, H), dtype)
    if cell == "lstm":
        lstm_forward(h_seq, c_seq, aux, gates, p["W_h"], p["h0"], p["c0"], tile_mnk, *alone(H))
        lstm_backward(
            dgates_x,
            dh0,
            dc0,
            p["dh_seq"],
            p["dh_last"],
            p["dc_last"],
            gates,
            c_seq,
            aux,
            p["c0"],
            W_h_T,
            tile_mnk,
            *alone(H),
        )
        outputs = [h_seq, c_seq, aux, gates, dgates_x, dh0, dc0]
    elif cell == "gru":
        dgates_h = np.empty((T, B, GH), dtype)
        gru_forward(h_seq, aux, gates, p["W_h"], p["b_hn"], p["h0"], tile_mnk, *alone(H))
        gru_backward(
            dgates_x, dgates_h, dh0, p["dh_seq"], p["dh_last"], gates, h_seq, aux, p["h0"], W_h_T, tile_mnk, *alone(H)
        )
        outputs = [h_seq, aux, gates, dgates_x, dgates_h, dh0]
    else:
        rnn_forward(h_seq, gates, p["W_h"], p["h0"], tile_mnk, *alone(H))
        rnn_backward(dgates_x, dh0, p["dh_seq"], p["dh_last"], gates, W_h_T, tile_mnk, *alone(H))
        outputs = [h_seq, gates, dgates_x, dh0]
    for array in outputs:
        assert array.dtype == dtype
    return [array.astype(np.float64) for array in outputs]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_float32_cells_agree_with_float64(cell):
    problem = cell_problem(cell)
    exact = run_cell(cell, problem, np.float64, 0)
    single = run_cell(cell, problem, np.float32, 0)
    for a32, a64 in zip(single, exact):
        np.testing.assert_allclose(a32, a64, rtol=0, atol=2e-6 * max(1.0, np.abs(a64).max()))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_tiled_recurrent_products_give_the_same_cells(cell):
    problem = cell_problem(cell, H=40, B=4)
    whole = run_cell(cell, problem, np.float64, 0)
    tiled = run_cell(cell, problem, np.float64, 2000)  # far below one step's product: many blocks
    for a, b in zip(tiled, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(25, 128, 512), (7, 300, 33), (1, 5, 7), (3, 1, 4)])
def test_gemm_matches_numpy_on_views(dtype, shape):
    M, K, N = shape
    rng = np.random.default_rng(1)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    a, b = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
    start = rng.normal(size=(M, N)).astype(dtype)
    for beta in (0.0, 1.0, 0.5):
        for tile in (0, 10**6, 500):
            out = start.copy()
            gemm_tiled(out, a, b, beta, tile)
            np.testing.assert_allclose(out, a @ b + beta * start, rtol=tol, atol=tol * K)
    # Transposed operands into a column block of a wider output; operands strided both ways are refused.
    wide = rng.normal(size=(M, N + 9)).astype(dtype)
    out = wide.copy()
    gemm(out[:, 4 : 4 + N], np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T, 1.0)
    np.testing.assert_allclose(out[:, 4 : 4 + N], a @ b + wide[:, 4 : 4 + N], rtol=tol, atol=tol * K)
    assert np.array_equal(out[:, :4], wide[:, :4]) and np.array_equal(out[:, 4 + N :], wide[:, 4 + N :])
    strided = rng.normal(size=(2 * M, 2 * K + 2)).astype(dtype)[::2, ::2]
    if strided.shape[0] > 1 and strided.shape[1] > 1:
        with pytest.raises(ValueError, match="unit stride"):
            gemm(start.copy(), strided[:, :K], b, 0.0)


# --------------------------------------------------------------------- single-stream sampling parts
@pytest.mark.parametrize("H, G, workers", [(8, 4, 2), (19, 3, 2), (10, 1, 3), (7, 4, 1)])
def test_packed_columns_are_each_workers_units_block_by_block(H, G, workers):
    W = np.arange(5 * G * H, dtype=np.float64).reshape(5, G * H)
    widest = -(-H // workers)
    packed = np.full((workers, 5, G * widest), -1.0)
    pack_unit_columns(packed, W, workers, H)
    for worker in range(workers):
        first, count = unit_range(worker, workers, H)
        columns = [k * H + first + j for k in range(G) for j in range(count)]
        np.testing.assert_array_equal(packed[worker, :, : G * count], W[:, columns])


def test_unit_ranges_cover_every_unit_once():
    for H in (1, 7, 16, 255):
        for workers in range(1, min(H, 5) + 1):
            ranges = [unit_range(w, workers, H) for w in range(workers)]
            assert [first for first, _ in ranges] == [sum(count for _, count in ranges[:w]) for w in range(workers)]
            assert sum(count for _, count in ranges) == H and min(count for _, count in ranges) >= H // workers


@njit
def relay(worker, workers, arrivals, board, seen, rounds):
    """Each round every worker posts the round number, meets the others, and reads all posts."""
    for round_number in range(1, rounds + 1):
        board[worker] = round_number
        arrive_and_wait(arrivals, worker, workers, 2 * round_number - 1)
        low = round_number
        for other in range(workers):
            low = min(low, board[other])
        seen[worker, round_number - 1] = low
        arrive_and_wait(arrivals, worker, workers, 2 * round_number)  # nobody posts again before all have read


@pytest.mark.parametrize("workers", [2, 3])
def test_barrier_lets_no_thread_read_before_every_thread_has_written(workers):
    rounds = 3000
    arrivals = np.zeros(workers * ARRIVAL_STRIDE, np.int64)
    board = np.zeros(workers, np.int64)
    seen = np.zeros((workers, rounds), np.int64)
    threads = [
        threading.Thread(target=relay, args=(w, workers, arrivals, board, seen, rounds)) for w in range(1, workers)
    ]
    for thread in threads:
        thread.start()
    relay(0, workers, arrivals, board, seen, rounds)
    for thread in threads:
        thread.join()
    assert np.array_equal(seen, np.tile(np.arange(1, rounds + 1), (workers, 1)))
