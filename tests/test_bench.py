"""scripts/bench.py: engines in child processes taking turns, and ratios taken pair by pair."""

import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from script_module import SCRIPTS, load

SCRIPT = os.path.join(SCRIPTS, "bench.py")


def _args(**overrides):
    values = dict(iters=10, warmup=0, sample_chars=10**6, threads=2, plan="batch", quick=True, cold=False)
    return argparse.Namespace(**{**values, **overrides})


class FakeSession:
    """Answers like a Session, at fixed rates that drift by the same factor for every engine."""

    def __init__(self, engine, log, train_seconds, sample_rates):
        self.engine, self.log, self.train_seconds, self.sample_rates = engine, log, train_seconds, sample_rates

    def train(self, iterations, budget_s):
        self.log.append(("train", self.engine, iterations))
        return [self.train_seconds * (1 + 0.5 * len(self.log))] * iterations  # the machine slows down

    def sample(self, sampler, budget_s, max_chars):
        self.log.append(("sample", self.engine, sampler))
        return self.sample_rates[sampler] / (1 + 0.5 * len(self.log))


def test_iterations_are_shared_out_between_an_even_number_of_slices():
    bench = load("bench")
    assert bench.slice_iterations(10) == [3, 3, 2, 2]
    assert bench.slice_iterations(4) == [1, 1, 1, 1]
    assert bench.slice_iterations(3) == [2, 1]
    assert bench.slice_iterations(1) == [1, 1]  # at least one a slice


def test_a_round_alternates_who_goes_first_and_takes_ratios_within_pairs(monkeypatch):
    bench = load("bench")
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    log = []
    ours = FakeSession("charrnn", log, 0.1, {"default": 20000.0, "1-thread": 15000.0})
    theirs = FakeSession("torch", log, 0.2, {"default": 1000.0})
    result = bench.measure_round(ours, theirs, _args(), round_index=0)
    training = [entry for entry in log if entry[0] == "train"]
    assert [engine for _, engine, _ in training] == ["charrnn", "torch", "torch", "charrnn"] * 2
    assert [count for _, _, count in training] == [3, 3, 3, 3, 2, 2, 2, 2]
    samplers = [(engine, sampler) for kind, engine, sampler in log if kind == "sample"]
    first = [("charrnn", "default"), ("charrnn", "1-thread"), ("torch", "default")]
    assert samplers == (first + first[::-1]) * 2
    # The machine slowed down between any two slices, so a pair's ratio is not the engines' ratio
    # exactly; each is the ratio of two neighbouring slices, each engine ahead in half of them.
    assert len(result["train_pairs"]) == 4 and len(result["sample_pairs"]) == 4
    assert np.exp(np.mean(np.log(result["train_pairs"]))) == pytest.approx(2.0, rel=0.05)
    assert all(10 < pair < 40 for pair in result["sample_pairs"])
    assert len(result["train"]["charrnn"]) == 10 and len(result["sample"]["charrnn 1-thread"]) == 4
    # The next round starts the other way round.
    log.clear()
    bench.measure_round(ours, theirs, _args(), round_index=1)
    assert log[0][:2] == ("train", "torch")


def test_one_thread_has_no_separate_one_thread_sampler(monkeypatch):
    bench = load("bench")
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    log = []
    ours = FakeSession("charrnn", log, 0.1, {"default": 20000.0})
    result = bench.measure_round(ours, None, _args(threads=1), round_index=0)
    assert {sampler for kind, _, sampler in log if kind == "sample"} == {"default"}
    assert result["train_pairs"] == [] and result["sample_pairs"] == [] and result["sample"]["charrnn 1-thread"] == []


def test_a_slice_runs_at_least_once_and_stops_at_its_budget():
    bench = load("bench")
    assert len(bench.train_slice(lambda: None, 5, 0.0)) == 1  # over budget at once: still one
    assert len(bench.train_slice(lambda: None, 5, 60.0)) == 5
    pieces = []
    bench.sample_slice(lambda: pieces.append(16) or 16, 0.0, 10**6)
    assert pieces == [16]
    pieces.clear()
    bench.sample_slice(lambda: pieces.append(16) or 16, 60.0, 40)  # stops once 40 characters are done
    assert sum(pieces) == 48


def _quick_run(*extra):
    command = [sys.executable, SCRIPT, "--quick", "--hidden", "8", "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_quick_run_without_torch_measures_charrnn_alone():
    row = _quick_run("--no-torch", "--rounds", "1")
    assert row["hidden"] == 8 and row["slices_per_round"] == 2 and row["timed_iterations"] == 3
    assert row["charrnn_train_chars_per_s"] > 0 and row["charrnn_sample_chars_per_s"] > 0
    assert row["charrnn_sample_1thread_chars_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert row["cpu"] and row["bound_chars_per_s"] > 0 and row["charrnn_fraction_of_bound"] > 0
    assert row["train_ratio"] is None and row["train_ratios_by_pair"] == [] and row["torch_peak_rss_mb"] is None


def test_a_quick_run_reports_pairwise_ratios_for_each_size():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    row = _quick_run("--rounds", "2")
    assert row["rounds"] == 2 and row["timed_iterations"] == 6 and len(row["bound_chars_per_s_by_round"]) == 2
    for kind in ("train", "sample"):
        pairs = row[f"{kind}_ratios_by_pair"]
        assert len(pairs) == 4 and all(pair > 0 for pair in pairs)
        assert min(pairs) <= row[f"{kind}_ratio"] <= max(pairs)
    assert row["torch_train_chars_per_s"] > 0 and row["torch_peak_rss_mb"] > 0 and row["torch_fraction_of_bound"] > 0


def test_a_child_that_dies_mid_run_is_named_and_leaves_no_cache(capfd):
    bench = load("bench")
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "charrnn-bench-cache-*")))
    session = bench.Session("charrnn", 8, _args(iters=3, warmup=0, sample_chars=100, cold=True))
    assert session.cache and os.path.isdir(session.cache)
    assert len(session.train(1, 1.0)) == 1
    session.process.kill()
    session.process.wait()
    with pytest.raises(SystemExit, match="the charrnn benchmark for hidden=8 failed"):
        session.train(1, 1.0)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "charrnn-bench-cache-*"))) == before


def test_a_child_that_cannot_start_says_which_and_exits():
    bench = load("bench")
    with pytest.raises(SystemExit, match="the charrnn benchmark for hidden=8 failed"):
        bench.Session("charrnn", 8, _args(plan="nonsense", cold=True))
