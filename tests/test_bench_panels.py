"""scripts/bench_panels.py: the per-step product three ways, and the 4-row driver's bits."""

import numpy as np
from script_module import load


def test_the_4_row_driver_is_the_panel_product_to_the_bit_on_rows_with_a_spare():
    bench = load("bench_panels")
    from charrnn.kernels.panels import packed_weights, panel_product, product_space

    rng = np.random.default_rng(0)
    a, W = rng.normal(size=(27, 40)).astype(np.float32), rng.normal(size=(40, 48)).astype(np.float32)
    panels = packed_weights(W, bench.STEPS)
    ours, theirs = product_space(27, W, panels), product_space(27, W, panels)
    panel_product(ours, a, panels, False)
    bench.four_row_steps(theirs, a, panels, 1)
    assert np.array_equal(ours, theirs)
    np.testing.assert_allclose(ours[:, :48], a.astype(np.float64) @ W, rtol=0, atol=1e-4)


def test_a_quick_run_prints_a_rate_for_each_way_and_shape(capsys):
    bench = load("bench_panels")
    bench.main(["--rows", "9", "--hidden", "16", "--quick"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU: ") and "BLAS: " in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["(9x16)(16x64)", "(9x64)(64x16)"]
    assert all(float(value) > 0 for row in rows for value in row[1:])
