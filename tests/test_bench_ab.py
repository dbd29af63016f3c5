"""scripts/bench_ab.py: two checkouts' charrnn children taking turns."""

import json
import os
import subprocess
import sys

import numpy as np
from script_module import SCRIPTS

ROOT = os.path.dirname(SCRIPTS)


def test_a_tree_against_itself_gives_a_ratio_a_pair_and_their_median():
    done = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "bench_ab.py"), ROOT, ROOT, "--hidden", "8", "--slices", "4"]
        + ["--iters", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["hidden"] == 8 and len(row["pairs"]) == 4  # one pair per slice
    assert all(0 < pair < float("inf") for pair in row["pairs"]) and row["speedup"] == np.median(row["pairs"])
    assert row["a_ms"] > 0 and row["b_ms"] > 0


def test_a_directory_that_is_not_a_checkout_is_refused_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "bench_ab.py"), str(tmp_path), ROOT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{tmp_path} has no scripts/bench.py: give the root of a charrnn checkout"
    ]
