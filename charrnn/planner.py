"""Which plan (charrnn.plan) a window shape gets on this machine: timed once, cached on disk.

The candidates are the batch split and the units split on the thread budget (with one thread there
is nothing to choose). Each is timed on a few forward + backward passes of a model of the shape,
alternating between them so both see the same machine load, after one untimed pass that compiles
and allocates. The faster wins by its median.

The answer is kept in plans.json beside Numba's cache (NUMBA_CACHE_DIR, else this package's
__pycache__, else ~/.cache/charrnn), keyed by the CPU model, the BLAS kernel, the thread budget and
the shape, so later processes reuse it and a cache copied from another CPU is never used. An
unreadable or malformed cache gets a one-line note and is rebuilt.

Timing only chooses: a plan, once chosen, gives the same bits every time, and a training run
records its plan in its checkpoints so that resuming never re-times.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from charrnn.cells import CELLS
from charrnn.checkpoint import atomic_write
from charrnn.errors import CharrnnError
from charrnn.machine import blas_info, cpu_model
from charrnn.model import Model
from charrnn.parallel import thread_budget
from charrnn.plan import Plan

CACHE_NAME = "plans.json"
CACHE_VERSION = 1
TIMED_PASSES = 3  # per candidate, after one untimed pass


def cache_path() -> Path:
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:
        return Path(configured) / "charrnn" / CACHE_NAME
    beside_package = Path(__file__).parent / "__pycache__"
    if os.access(beside_package if beside_package.exists() else beside_package.parent, os.W_OK):
        return beside_package / CACHE_NAME
    return Path.home() / ".cache" / "charrnn" / CACHE_NAME


def machine_key(threads: int) -> str:
    blas = blas_info() or {}
    return f"{cpu_model()} | {blas.get('library')} {blas.get('kernel')} | {threads} threads"


def shape_key(config, batch: int, steps: int, dtype) -> str:
    return f"{config.cell} {config.layers}x{config.hidden} V={config.vocab_size} B={batch} T={steps} {np.dtype(dtype).name}"


def candidates(config, batch: int, threads: int) -> list[Plan]:
    """The plans worth timing: those that would really use more than one thread."""
    plans = [Plan("batch", threads)]
    if CELLS[config.cell].splits_units:
        plans.append(Plan("units", threads))
    useful = [plan for plan in plans if plan.parts(batch, config.hidden) > 1]
    return useful or [Plan("batch", threads)]


def read_cache(path: Path, note) -> dict:
    """The cache's machines and shapes; a malformed file or entry is noted and left out."""
    empty = {"version": CACHE_VERSION, "machines": {}}
    try:
        with open(path, encoding="utf-8") as file:
            cache = json.load(file)
        if (
            not isinstance(cache, dict)
            or cache.get("version") != CACHE_VERSION
            or not isinstance(cache.get("machines"), dict)
        ):
            raise ValueError("unknown layout")
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as error:
        note(f"plan cache {path} is unreadable ({error}); it will be rebuilt")
        return empty
    machines = {}
    for machine, shapes in cache["machines"].items():
        if isinstance(shapes, dict):
            machines[machine] = {shape: entry for shape, entry in shapes.items() if isinstance(entry, dict)}
    if machines != cache["machines"]:
        note(f"plan cache {path} has malformed entries; they will be timed again")
    return {"version": CACHE_VERSION, "machines": machines}


def save_entry(path: Path, machine: str, shape: str, entry: dict, note) -> None:
    """Adds one entry to the cache as it is on disk now, so runs that planned at the same time all
    keep theirs."""
    cache = read_cache(path, lambda message: None)
    cache["machines"].setdefault(machine, {})[shape] = entry
    try:
        atomic_write(path, lambda file: file.write(json.dumps(cache, indent=1, sort_keys=True).encode()))
    except OSError as error:
        note(f"could not save the plan cache at {path} ({error}); the plan will be timed again next time")


def time_candidates(config, batch: int, steps: int, dtype, plans: list[Plan]) -> dict[Plan, float]:
    """Median seconds of a training forward + backward for each plan, on random ids. One model at a
    time (each freed before the next), so planning needs no more memory than training."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, config.vocab_size, size=(batch, steps)).astype(np.int32)
    targets = rng.integers(0, config.vocab_size, size=(batch, steps)).astype(np.int32)
    seconds = {}
    for plan in plans:
        model = Model(config, dtype=dtype, plan=plan)
        grads = model.zeros_like_params()
        dropout_rng = np.random.default_rng(1)
        times = []
        for attempt in range(1 + TIMED_PASSES):  # the first compiles and allocates
            started = time.perf_counter()
            model.loss_and_grads(inputs, targets, model.initial_state(batch), grads, dropout_rng)
            if attempt:
                times.append(time.perf_counter() - started)
        seconds[plan] = float(np.median(times))
        del model, grads
    return seconds


def choose_plan(config, batch: int, steps: int, dtype=np.float32, note=print, threads: int | None = None) -> Plan:
    """The plan for this shape on this machine: from the cache, else timed now and cached."""
    threads = threads or thread_budget()
    plans = candidates(config, batch, threads)
    if len(plans) == 1:
        return plans[0]
    path = cache_path()
    cache = read_cache(path, note)
    machine, shape = machine_key(threads), shape_key(config, batch, steps, dtype)
    known = cache["machines"].get(machine, {}).get(shape)
    if isinstance(known, dict):
        try:
            return Plan.from_dict(known)
        except CharrnnError:  # a hand-edited entry: time it again
            pass
    note(f"choosing how to split {shape} between {threads} threads (once for this machine) ...")
    seconds = time_candidates(config, batch, steps, dtype, plans)
    best = min(plans, key=seconds.get)
    timings = ", ".join(f"{plan.split} {seconds[plan] * 1000:.0f} ms" for plan in plans)
    note(f"plan: {best.describe()}; a training pass took {timings}")
    entry = {**best.to_dict(), "ms_per_pass": {plan.split: round(seconds[plan] * 1000, 2) for plan in plans}}
    save_entry(path, machine, shape, entry, note)
    return best


def cached_plans(threads: int | None = None) -> dict[str, dict]:
    """{shape: entry} this machine has chosen so far (for `charrnn info --machine`)."""
    threads = threads or thread_budget()
    cache = read_cache(cache_path(), lambda message: None)
    return dict(cache["machines"].get(machine_key(threads), {}))
