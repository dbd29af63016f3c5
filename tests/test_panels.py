"""Per-step products on packed panels: against NumPy, and every row computed the same way."""

import numpy as np
import pytest

from charrnn.kernels.panels import (
    PANEL_MIN_STEPS,
    pack_panels,
    packed_weights,
    panel_product,
    product_space,
    row_product,
    row_tiles,
    step_product,
)

# Rows: only spare rows, one 4-row tile, 4-row tile and spare, 5- and 4-row tiles, 5-row tiles only.
SHAPES = [(1, 1, 1), (3, 5, 7), (4, 16, 16), (7, 9, 33), (13, 40, 48), (25, 128, 512), (50, 64, 200)]


def packed(W):
    panels = packed_weights(W, PANEL_MIN_STEPS)
    assert panels.shape[0] * panels.shape[2] >= W.shape[1]
    return panels


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("shape", SHAPES)
def test_panel_product_matches_numpy(dtype, tol, shape):
    M, K, N = shape
    rng = np.random.default_rng(0)
    a, W = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
    panels = packed(W)
    exact = a.astype(np.float64) @ W.astype(np.float64)
    scale = np.abs(a).max() * np.abs(W).max() * K
    out = product_space(M, W, panels)
    panel_product(out, a, panels, False)
    np.testing.assert_allclose(out[:, :N], exact, rtol=0, atol=tol * scale)
    start = rng.normal(size=out.shape).astype(dtype)
    out = start.copy()
    panel_product(out, a, panels, True)
    np.testing.assert_allclose(out[:, :N], start[:, :N] + exact, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_rows_result_does_not_depend_on_the_rows_around_it(dtype):
    """What lets a batch be cut anywhere: rows computed alone, in a tile or in the leftover tile
    give the same bits."""
    rng = np.random.default_rng(1)
    a, W = rng.normal(size=(50, 96)).astype(dtype), rng.normal(size=(96, 72)).astype(dtype)
    panels = packed(W)
    whole = product_space(50, W, panels)
    panel_product(whole, a, panels, False)
    for rows in (slice(0, 25), slice(25, 50), slice(3, 10), slice(49, 50)):
        part = product_space(rows.stop - rows.start, W, panels)
        panel_product(part, np.ascontiguousarray(a[rows]), panels, False)
        assert np.array_equal(part, whole[rows])
    # Columns too: the panels of W's second half are the second half of W's panels.
    width = panels.shape[2]
    right = packed(np.ascontiguousarray(W[:, 3 * width :]))
    out = product_space(50, W[:, 3 * width :], right)
    panel_product(out, a, right, False)
    assert np.array_equal(out[:, : W.shape[1] - 3 * width], whole[:, 3 * width : W.shape[1]])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("K, N", [(1, 1), (7, 5), (19, 76), (64, 80), (128, 65), (256, 512)])
def test_row_product_is_the_tiles_row_to_the_bit(dtype, tol, K, N):
    """One row on its own (single-stream sampling): what a 4-row tile computes for that row, also
    where there are fewer than four panels or a few left over after groups of four."""
    rng = np.random.default_rng(K + N)
    x, W = rng.normal(size=K).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
    panels = packed(W)
    written = panels.shape[0] * panels.shape[2]
    room = np.full(written + 19, np.nan, dtype)
    row_product(room, x, panels)
    out = room[:written]
    assert np.isnan(room[written:]).all()  # nothing written past the panels' columns
    tile = product_space(4, W, panels)
    panel_product(tile, np.stack([x, -x, 2 * x, x]), panels, False)
    assert np.array_equal(out, tile[0]) and np.array_equal(out, tile[3])
    exact = x.astype(np.float64) @ W.astype(np.float64)
    np.testing.assert_allclose(out[:N], exact, rtol=0, atol=tol * np.abs(x).max() * np.abs(W).max() * K)
    assert np.all(out[N:] == 0.0)  # the padding columns


@pytest.mark.parametrize("rows", range(1, 80))
def test_row_tiles_cover_every_batch_of_12_rows_or_more_exactly(rows):
    fives, fours = row_tiles(rows)
    covered = 5 * fives + 4 * fours
    assert fives >= 0 and fours >= 0 and 0 <= rows - covered < 4
    if rows >= 12:
        assert covered == rows


def test_5_row_and_4_row_tiles_compute_a_row_to_the_same_bits():
    """13 rows run as one 5-row and two 4-row tiles; each row alone runs in the zero-padded spare
    tile; 10 rows run as two 5-row tiles. Every row comes out the same."""
    rng = np.random.default_rng(2)
    a, W = rng.normal(size=(13, 70)).astype(np.float32), rng.normal(size=(70, 40)).astype(np.float32)
    panels = packed(W)
    assert row_tiles(13) == (1, 2) and row_tiles(10) == (2, 0)
    whole = product_space(13, W, panels)
    panel_product(whole, a, panels, False)
    for rows in [slice(r, r + 1) for r in range(13)] + [slice(0, 10), slice(3, 13)]:
        part = product_space(rows.stop - rows.start, W, panels)
        panel_product(part, np.ascontiguousarray(a[rows]), panels, False)
        assert np.array_equal(part, whole[rows])


def test_padding_columns_are_zero_and_short_windows_use_the_blas():
    W = np.arange(12, dtype=np.float32).reshape(2, 6)
    panels = np.empty((1, 2, 16), np.float32)
    pack_panels(panels, W)
    assert np.array_equal(panels[0, :, :6], W) and not panels[0, :, 6:].any()
    assert packed_weights(W, PANEL_MIN_STEPS - 1).shape[0] == 0
    a = np.ones((3, 2), np.float32)
    none = packed_weights(W, 1)
    out = product_space(3, W, none)
    assert out.shape == (3, 6)
    step_product(out, a, W, none, False, 0)
    np.testing.assert_array_equal(out, a @ W)
