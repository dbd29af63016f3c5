"""scripts/bench.py: engines in child processes taking turns, and ratios taken pair by pair."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_turns_alternate_between_slices_and_rounds():
    bench = _bench()
    sessions = ["charrnn", "torch"]
    assert bench.slice_turns(sessions, 0, 0) == ["charrnn", "torch"]
    assert bench.slice_turns(sessions, 0, 1) == ["torch", "charrnn"]
    assert bench.slice_turns(sessions, 1, 0) == ["torch", "charrnn"]


def test_a_slice_runs_at_least_once_and_stops_at_its_budget():
    bench = _bench()
    calls = []
    assert len(bench.train_slice(lambda: calls.append(1), 5, 0.0)) == 1  # over budget at once: still one
    assert len(bench.train_slice(lambda: None, 5, 60.0)) == 5
    assert bench.sample_slice(lambda: 16, 0.0, 10**6) > 0
    pieces = []
    bench.sample_slice(lambda: pieces.append(16) or 16, 60.0, 40)  # stops once 40 characters are done
    assert sum(pieces) == 48


def test_a_quick_run_reports_pairwise_ratios_for_each_size():
    with_torch = importlib.util.find_spec("torch") is not None
    command = [sys.executable, SCRIPT, "--quick", "--hidden", "8", "--rounds", "2", "--json"]
    done = subprocess.run(command + ([] if with_torch else ["--no-torch"]), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["hidden"] == 8 and row["rounds"] == 2 and row["slices_per_round"] == 3
    assert row["timed_iterations"] == 6  # quick: 3 iterations a round, one per slice
    assert row["charrnn_train_chars_per_s"] > 0 and row["charrnn_sample_chars_per_s"] > 0
    assert row["charrnn_sample_1thread_chars_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert row["cpu"] and row["bound_chars_per_s"] > 0 and len(row["bound_chars_per_s_by_round"]) == 2
    if not with_torch:
        assert row["train_ratio"] is None and row["train_ratios_by_pair"] == []
        return
    for kind in ("train", "sample"):
        pairs = row[f"{kind}_ratios_by_pair"]
        assert len(pairs) == 6 and all(pair > 0 for pair in pairs)
        assert row[f"{kind}_ratio"] == pytest.approx(float(np.median(pairs)))
    assert row["torch_peak_rss_mb"] > 0 and row["torch_fraction_of_bound"] > 0


def test_a_failing_child_says_which_and_exits():
    bench = _bench()
    args = bench.argparse.Namespace(
        iters=3, warmup=1, sample_chars=100, threads=1, plan="nonsense", quick=True, cold=False
    )
    with pytest.raises(SystemExit, match="the charrnn benchmark for hidden=8 failed"):
        bench.Session("charrnn", 8, args)
