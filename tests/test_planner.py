"""Choosing a plan per shape: timed once, cached beside Numba's cache, keyed by machine and shape."""

import json

import numpy as np
import pytest

from charrnn import planner
from charrnn.model import ModelConfig
from charrnn.plan import Plan

CONFIG = ModelConfig("lstm", 7, 64, 2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(planner, "thread_budget", lambda: 2)
    timed = []

    def fake_timing(config, batch, steps, dtype, plans):
        timed.append(plans)
        return {plan: (0.2 if plan.split == "units" else 0.3) for plan in plans}

    monkeypatch.setattr(planner, "time_candidates", fake_timing)
    return tmp_path / "charrnn" / planner.CACHE_NAME, timed


def test_the_faster_plan_is_chosen_once_and_reused(cache):
    path, timed = cache
    notes = []
    assert planner.choose_plan(CONFIG, 50, 20, note=notes.append) == Plan("units", 2)
    assert len(timed) == 1 and "units split" in notes[-1] and "batch 300 ms, units 200 ms" in notes[-1]
    assert planner.choose_plan(CONFIG, 50, 20, note=notes.append) == Plan("units", 2)
    assert len(timed) == 1  # from the cache
    entry = planner.cached_plans()[planner.shape_key(CONFIG, 50, 20, np.float32)]
    assert entry["split"] == "units" and entry["ms_per_pass"] == {"batch": 300.0, "units": 200.0}
    assert json.loads(path.read_text())["version"] == planner.CACHE_VERSION


def test_another_cpus_plans_are_never_used(cache, monkeypatch):
    path, timed = cache
    planner.choose_plan(CONFIG, 50, 20, note=lambda message: None)
    monkeypatch.setattr(planner, "cpu_model", lambda: "Some Other CPU 9000")
    planner.choose_plan(CONFIG, 50, 20, note=lambda message: None)
    assert len(timed) == 2
    assert len(json.loads(path.read_text())["machines"]) == 2


def test_a_corrupt_cache_gets_a_note_and_is_rebuilt(cache):
    path, timed = cache
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    notes = []
    assert planner.choose_plan(CONFIG, 50, 20, note=notes.append) == Plan("units", 2)
    assert any("unreadable" in note and "rebuilt" in note for note in notes)
    assert json.loads(path.read_text())["machines"]


def test_shapes_with_nothing_to_choose_are_not_timed(cache):
    _, timed = cache
    assert planner.choose_plan(ModelConfig("gru", 7, 16, 1), 8, 20, note=print) == Plan("batch", 2)
    assert planner.choose_plan(CONFIG, 50, 20, note=print, threads=1) == Plan("batch", 1)
    assert timed == []


def test_real_timing_returns_a_duration_per_candidate():
    plans = [Plan("batch", 2), Plan("units", 2)]
    seconds = planner.time_candidates(ModelConfig("rnn", 5, 64, 1), 32, 4, np.float32, plans)
    assert set(seconds) == set(plans) and all(s > 0 for s in seconds.values())


def test_malformed_entries_are_left_out_and_timed_again(cache):
    path, timed = cache
    machine = planner.machine_key(2)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": planner.CACHE_VERSION, "machines": {machine: ["junk"], "other": {"x": 3}}}))
    notes = []
    assert planner.cached_plans() == {}
    assert planner.choose_plan(CONFIG, 50, 20, note=notes.append) == Plan("units", 2)
    assert any("malformed" in note for note in notes) and len(timed) == 1


def test_a_plan_saved_meanwhile_by_another_run_is_kept(cache):
    path, _ = cache
    planner.choose_plan(CONFIG, 50, 20, note=lambda message: None)
    other = planner.shape_key(ModelConfig("gru", 7, 64, 2), 50, 20, np.float32)
    planner.save_entry(path, planner.machine_key(2), other, {"split": "batch", "threads": 2}, print)
    planner.choose_plan(CONFIG, 64, 20, note=lambda message: None)  # read before, written after
    assert set(planner.cached_plans()) >= {other, planner.shape_key(CONFIG, 64, 20, np.float32)}
