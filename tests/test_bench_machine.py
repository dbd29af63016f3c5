"""scripts/bench_machine.py: the benchmark's flop count and GEMM bound."""

import pytest
from script_module import load


def _bench_machine():
    return load("bench_machine")


@pytest.mark.parametrize("hidden", [32, 128, 256, 512])
def test_bench_flop_count_is_the_readme_formula(hidden):
    # README: an LSTM training character costs 72·H² + 6·H·V flops for 2 layers.
    bench = _bench_machine()
    assert bench.flops_per_char(hidden) == 72 * hidden**2 + 6 * hidden * bench.VOCAB


def test_bench_gemm_bound_is_flops_over_rates():
    bench = _bench_machine()
    hidden, rate = 128, 100.0
    same = bench.gemm_bound(hidden, rate, {bench.STEP_FORWARD: rate, bench.STEP_BACKWARD: rate})
    assert same == pytest.approx(rate * 1e9 / bench.flops_per_char(hidden))
    slower_steps = bench.gemm_bound(hidden, rate, {bench.STEP_FORWARD: rate / 2, bench.STEP_BACKWARD: rate / 2})
    assert slower_steps < same
    assert bench.gemm_bound(hidden, None, {}) is None
