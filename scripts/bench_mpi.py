"""One process on T threads against N MPI ranks on one thread each: training chars/s on one machine.

    python scripts/bench_mpi.py ../shared/data/tinyshakespeare/input.txt                 # 2x256 and 2x512
    python scripts/bench_mpi.py CORPUS --hidden 512 --iters 80 --ranks 2

Each configuration is a real `charrnn train CORPUS` (LSTM, 2 layers, B=50, T=100, the plan charrnn picks)
run for --iters iterations, one after another: `charrnn train` alone with OPENBLAS_NUM_THREADS=N (N
threads), then `mpirun -n N charrnn train` with OPENBLAS_NUM_THREADS=1 (N ranks of one thread; the
global batch is the same, each rank trains B/N streams and the gradients are allreduced every
iteration). The figure is the median of the progress lines' chars/s after the first two (start-up,
first touches). Other work on a shared machine moves these figures; run them back to back.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from charrnn.machine import cpu_model

RATE = re.compile(r"\|\s+([\d.]+)k chars/s \|\s+(\d+) ms/iter")


def train(command, env):
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    rates = [(float(k), int(ms)) for k, ms in RATE.findall(result.stdout)][2:]
    if not rates:
        sys.exit(f"no progress lines from {' '.join(command)}; raise --iters")
    return statistics.median(r for r, _ in rates), statistics.median(ms for _, ms in rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="a text file or prepared directory (e.g. Tiny Shakespeare)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    args = parser.parse_args()
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
    if mpirun is None:
        sys.exit("mpirun not found; install the mpi extra: pip install -e '.[mpi]'")
    root = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    n = args.ranks
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores (shared with other work: figures vary)")
    print(f"{'model':>8} {f'1 process x {n} threads':>24} {f'{n} ranks x 1 thread':>24}")
    with tempfile.TemporaryDirectory(prefix="bench-mpi-") as tmp:
        for hidden in args.hidden:
            base = [sys.executable, "-m", "charrnn", "train", args.corpus, "--hidden", str(hidden)]
            base += ["--max-iters", str(args.iters), "--print-every", "10", "--eval-every", str(args.iters + 1)]
            base += ["--sample-length", "10"]
            one = train(base + ["--out", f"{tmp}/one-{hidden}"], {"OPENBLAS_NUM_THREADS": str(n)})
            ranks = train(
                [mpirun, "--oversubscribe", "-n", str(n)] + base + ["--out", f"{tmp}/ranks-{hidden}"],
                {"OPENBLAS_NUM_THREADS": "1", **root},
            )
            cells = [f"{rate:6.1f}k chars/s {ms:4.0f} ms/it" for rate, ms in (one, ranks)]
            print(f"{f'2x{hidden}':>8} {cells[0]:>24} {cells[1]:>24}")


if __name__ == "__main__":
    main()
