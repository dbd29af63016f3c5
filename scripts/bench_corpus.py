"""What a large corpus costs: `charrnn prepare` speed and memory, and how fast and how small `charrnn train`
starts on the prepared corpus, against today's loader (the whole file read into memory) and against the
same model on Tiny Shakespeare.

    python scripts/bench_corpus.py ../shared/data/tinyshakespeare/input.txt            # 500 MB
    python scripts/bench_corpus.py ../shared/data/tinyshakespeare/input.txt --size-mb 100 --iters 10

The synthetic corpus is made at run time in a temporary directory (never kept): Tiny Shakespeare's
lines drawn at random, with a few non-ASCII ones so the UTF-8 path runs, to --size-mb megabytes. Each
measurement runs as its own child process and its peak RSS is that child's own (os.wait4's rusage):
  prepare             `charrnn prepare BIG --out DIR`: MB/s of text and peak RSS
  load (today)        charrnn.data.load_corpus(BIG) alone: what today's loader holds in memory
  train, 3 corpora    `charrnn train X --max-iters ... --print-every 1`, stopped with Ctrl-C (SIGINT: the run
                      saves a checkpoint and ends) after --iters iterations: seconds from the process's
                      start to its first iteration line, and peak RSS. X is Tiny Shakespeare, the prepared
                      DIR, and BIG read by today's loader (CHARRNN_CACHE=off).
Kernels are compiled (Numba's cache) and the plan fixed (--plan batch) before anything is timed, so the
figures are the corpus's cost. Other work on a shared machine slows the MB/s and start times; it does not
change the RSS figures.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from charrnn.machine import cpu_model

TARGETS = "targets: prepare >= 50 MB/s with peak RSS <= 300 MB; train starts <= 5 s, peak RSS within 100 MB of Tiny Shakespeare's"


def make_corpus(path: Path, size: int, source: Path, seed: int = 0) -> None:
    lines = source.read_bytes().splitlines(keepends=True)
    lines += ["Ünïcödé — naïve café ✓\n".encode(), "Ελληνικά και 日本語\n".encode()]
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as out:
        while written < size:
            block = b"".join(lines[i] for i in rng.integers(0, len(lines), size=100_000))[: size - written]
            out.write(block)
            written += len(block)


def run_child(command, env=None, stop_after_iters=None):
    """(seconds to the first 'iter' line or to the end, peak RSS in MB, stdout) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(part) for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe, read to its end: progress lines cannot fill a second one
        text=True,
        env={**os.environ, **(env or {})},
    )
    first, lines = None, []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("iter "):
            first = first or time.perf_counter() - started
            iteration = int(line.split()[1].split("/")[0])
            if stop_after_iters and iteration >= stop_after_iters:
                child.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = first if first is not None else time.perf_counter() - started
    if child.returncode not in (0, 130):
        sys.exit(f"{' '.join(map(str, command))} failed ({child.returncode}):\n{''.join(lines)}")
    return seconds, usage.ru_maxrss / 1024, "".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tinyshakespeare", type=Path, help="Tiny Shakespeare's input.txt (the baseline corpus)")
    parser.add_argument("--size-mb", type=int, default=500, help="size of the synthetic corpus")
    parser.add_argument("--iters", type=int, default=20, help="training iterations per measured run")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    if not args.tinyshakespeare.is_file():
        sys.exit(f"{args.tinyshakespeare} is not a file; pass Tiny Shakespeare's input.txt")
    charrnn = [sys.executable, "-m", "charrnn"]
    model = ["--layers", args.layers, "--hidden", args.hidden, "--plan", "batch", "--print-every", "1"]
    model = [str(x) for x in model] + ["--max-iters", str(args.iters + 1000)]

    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        tmp = Path(tmp)
        env = {"CHARRNN_CACHE": str(tmp / "cache")}
        big = tmp / "big.txt"
        started = time.perf_counter()
        make_corpus(big, args.size_mb * 1_000_000, args.tinyshakespeare)
        size = big.stat().st_size
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores (shared with other work: times vary, RSS does not)")
        print(f"synthetic corpus: {size / 1e6:.0f} MB in {time.perf_counter() - started:.1f}s; {TARGETS}")
        # Compile the kernels (Numba's cache) with this model's shape before timing anything.
        run_child(charrnn + ["train", args.tinyshakespeare, "--out", tmp / "warm"] + model, env, stop_after_iters=2)

        prepared = tmp / "big.prepared"
        seconds, rss, _ = run_child(charrnn + ["prepare", big, "--out", prepared], env)
        rows = [("prepare", f"{size / seconds / 1e6:.0f} MB/s", f"{seconds:.1f} s", rss)]
        load = f"from charrnn.data import load_corpus; load_corpus({str(big)!r})"
        seconds, rss, _ = run_child([sys.executable, "-c", load], env)
        rows.append(("load_corpus (today's loader)", f"{size / seconds / 1e6:.0f} MB/s", f"{seconds:.1f} s", rss))
        trains = [
            ("train Tiny Shakespeare", args.tinyshakespeare, env),
            ("train prepared DIR (memory-mapped)", prepared, env),
            ("train BIG, today's loader", big, {"CHARRNN_CACHE": "off"}),
        ]
        for name, corpus, corpus_env in trains:
            command = charrnn + ["train", corpus, "--out", tmp / name.replace(" ", "_")] + model
            seconds, rss, _ = run_child(command, corpus_env, stop_after_iters=args.iters)
            rows.append((name, "", f"{seconds:.1f} s to iter 1", rss))

    print(f"\n{'':38} {'rate':>10} {'time':>18} {'peak RSS':>10}")
    for name, rate, seconds, rss in rows:
        print(f"{name:38} {rate:>10} {seconds:>18} {rss:8.0f} MB")
    baseline = rows[2][3]
    print(
        f"\nprepared vs Tiny Shakespeare: {rows[3][3] - baseline:+.0f} MB peak RSS; "
        f"today's loader: {rows[4][3] - baseline:+.0f} MB ({args.layers}x{args.hidden} LSTM, B=50, T=100, "
        f"{args.iters} iterations)"
    )


if __name__ == "__main__":
    main()
