"""Batch slicing, the part runner and the BLAS facts the kernels are tuned by (plans: test_plan.py)."""

import threading

import pytest

from charrnn import parallel


def test_split_rows_covers_the_batch_in_near_equal_slices():
    for batch in (1, 7, 16, 50, 51):
        for parts in range(1, min(batch, 5) + 1):
            rows = parallel.split_rows(batch, parts)
            assert len(rows) == parts
            assert rows[0].start == 0 and rows[-1].stop == batch
            assert all(a.stop == b.start for a, b in zip(rows, rows[1:]))
            sizes = [r.stop - r.start for r in rows]
            assert max(sizes) - min(sizes) <= 1


def test_run_parts_returns_results_in_order_using_other_threads():
    seen = []

    def task(k):
        def run():
            seen.append(threading.get_ident())
            return k * k

        return run

    assert parallel.run_parts([task(k) for k in range(4)]) == [0, 1, 4, 9]
    assert seen.count(threading.get_ident()) == 1  # the first runs here, the rest elsewhere
    assert parallel.run_parts([task(5)]) == [25]


def test_run_parts_waits_for_every_task_before_raising():
    finished = threading.Event()

    def failing():
        raise ValueError("first part failed")

    def slow():
        finished.wait(0.2)
        finished.set()
        return "done"

    with pytest.raises(ValueError, match="first part failed"):
        parallel.run_parts([failing, slow])
    assert finished.is_set()
    with pytest.raises(KeyError):
        parallel.run_parts([lambda: 1, lambda: {}["missing"]])


def test_blas_facts_are_sane():
    assert parallel.thread_budget() >= 1
    assert parallel.small_gemm_budget() in (0, parallel.SMALL_MATRIX_MNK)


def test_the_blas_is_pinned_to_one_thread_once_a_model_exists():
    from charrnn.machine import blas_info
    from charrnn.model import Model, ModelConfig

    Model(ModelConfig("rnn", 3, 2, 1))
    if not parallel._blas_controls():
        pytest.skip("threadpoolctl cannot pin the BLAS Numba uses here")
    assert blas_info()["threads"] == 1
