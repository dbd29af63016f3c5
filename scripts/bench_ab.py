"""charrnn's training speed in two source trees, side by side: what an engine change is worth.

    git worktree add /tmp/before HEAD~1
    python scripts/bench_ab.py /tmp/before .                  # H=256, 16 pairs of 3-iteration slices
    python scripts/bench_ab.py /tmp/before . --hidden 128,512 --slices 20

Each tree's scripts/bench.py builds its own charrnn child (bench.py's Session: the LSTM, batch and
window bench.py times, on that tree's code and Numba cache), and the two children take turns, slice
by slice, in alternating order, bench.py's PAUSE_S apart, as bench.py sets charrnn against PyTorch. A slice is
--iters training iterations; its time is their median. "speedup" is the median over pairs of A's
time over B's (above 1: B is faster); the pairs' range is printed beside it, since on a shared VM
one slice can run a third slower than the next.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_args, when loaded by path
from bench_args import positive, positive_list  # noqa: E402


def load_bench(tree, name):
    """The tree's scripts/bench.py as a module; its children run that tree's code."""
    path = os.path.join(os.path.abspath(tree), "scripts", "bench.py")
    if not os.path.isfile(path):
        raise SystemExit(f"{tree} has no scripts/bench.py: give the root of a charrnn checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "Session"):
        raise SystemExit(f"{tree}'s scripts/bench.py predates live benchmark children (bench.py's Session)")
    return module


def session_args(args):
    """The options bench.py's children read, for training only."""
    return argparse.Namespace(
        iters=args.iters, warmup=2, sample_chars=500, threads=args.threads, plan=args.plan, quick=True, cold=False
    )


def compare(benches, hidden, args):
    sessions = []
    try:
        for bench in benches:
            sessions.append(bench.Session("charrnn", hidden, session_args(args)))
        times = [[], []]
        for index in range(args.slices):
            order = (0, 1) if index % 2 == 0 else (1, 0)
            for which in order:
                time.sleep(benches[which].PAUSE_S)
                times[which].append(float(np.median(sessions[which].train(args.iters, 60.0))))
        for session in sessions:
            session.close()  # asks the child to finish, so it ends at once
    finally:
        for session in sessions:
            session.stop()
    pairs = [a / b for a, b in zip(*times)]
    return {
        "hidden": hidden,
        "a_ms": 1000 * float(np.median(times[0])),
        "b_ms": 1000 * float(np.median(times[1])),
        "speedup": float(np.median(pairs)),
        "pairs": pairs,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="the first charrnn checkout (the baseline)")
    parser.add_argument("b", help="the second checkout (the change)")
    parser.add_argument("--hidden", type=positive_list, default=[256], help="comma-separated hidden sizes")
    parser.add_argument("--slices", type=positive, default=16, help="slices per tree and size")
    parser.add_argument("--iters", type=positive, default=3, help="training iterations per slice")
    parser.add_argument("--threads", type=positive, default=os.cpu_count(), help="threads for both")
    parser.add_argument("--plan", choices=("batch", "units"), default="batch", help="the split both use")
    parser.add_argument("--json", action="store_true", help="one JSON object per hidden size")
    args = parser.parse_args(argv)
    benches = [load_bench(args.a, "bench_a"), load_bench(args.b, "bench_b")]
    if not args.json:
        print(f"A: {os.path.abspath(args.a)}\nB: {os.path.abspath(args.b)}")
        print(f"{args.slices} pairs of {args.iters}-iteration slices, {args.threads} threads, {args.plan} split")
    for hidden in args.hidden:
        row = compare(benches, hidden, args)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"H={hidden}: ms per iteration A {row['a_ms']:.1f}, B {row['b_ms']:.1f}; "
                f"B's speedup {row['speedup']:.3f} (pairs {min(row['pairs']):.3f}-{max(row['pairs']):.3f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
