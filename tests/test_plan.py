"""Plans: how a window is cut between threads, and the grouped gate order of the units split."""

import numpy as np
import pytest

from charrnn.errors import CharrnnError
from charrnn.plan import Plan, unit_permutation, unit_ranges


def test_parts_follow_the_threads_and_the_smallest_useful_share():
    assert Plan("batch", 4).parts(1, 512) == 1
    assert Plan("batch", 4).parts(31, 512) == 1
    assert Plan("batch", 4).parts(32, 512) == 2
    assert Plan("batch", 4).parts(1000, 512) == 4
    assert Plan("units", 2).parts(1, 512) == 2
    assert Plan("units", 2).parts(50, 32) == 1
    assert Plan("units", 8).parts(50, 128) == 4
    assert Plan("batch", 1).parts(1000, 512) == 1


def test_a_plan_round_trips_and_bad_ones_are_refused():
    plan = Plan("units", 2)
    assert Plan.from_dict(plan.to_dict()) == plan
    assert "hidden units" in plan.describe() and "2 threads" in plan.describe()
    with pytest.raises(CharrnnError, match="unknown split"):
        Plan("diagonal", 2)
    with pytest.raises(CharrnnError, match="at least 1 thread"):
        Plan("batch", 0)
    with pytest.raises(CharrnnError, match="has no 'threads'"):
        Plan.from_dict({"split": "units"})
    with pytest.raises(CharrnnError, match="malformed"):
        Plan.from_dict({"split": "units", "threads": "two"})
    assert Plan("batch", 2).describe(8, 64).startswith("one thread")
    assert "2 threads" in Plan("units", 2).describe(8, 64)


def test_unit_ranges_cover_the_units_in_near_equal_shares():
    for hidden in (1, 5, 64, 513):
        for workers in range(1, min(hidden, 4) + 1):
            ranges = unit_ranges(hidden, workers)
            assert ranges[0][0] == 0 and sum(n for _, n in ranges) == hidden
            assert all(f + n == g for (f, n), (g, _) in zip(ranges, ranges[1:]))
            assert max(n for _, n in ranges) - min(n for _, n in ranges) <= 1


def test_the_grouped_gate_order_puts_each_threads_gate_blocks_together():
    # H=4, G=2, 2 threads: thread 0 owns units 0-1, thread 1 units 2-3.
    assert unit_permutation(4, 2, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert unit_permutation(5, 3, 1).tolist() == list(range(15))  # one thread: the natural order
    perm = unit_permutation(7, 4, 3)
    assert sorted(perm.tolist()) == list(range(28))
    assert np.unique(perm).size == perm.size
