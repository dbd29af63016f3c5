"""The scaling model of data-parallel training: what one iteration's allreduce costs per model size.

    python scripts/bench_allreduce.py                  # starts itself under `mpirun -n 2` (the mpi extra)
    mpirun -n 4 python scripts/bench_allreduce.py      # or launched by hand

charrnn's ranks sum one float64 buffer per iteration (charrnn.distributed.StepReducer: every gradient,
the loss, two flags and the carried state), so its size follows from the model: 8 bytes x (parameters +
2*L*B*H + 3). For each size this prints those bytes, the allreduce time measured here (median of
--repeats, ranks on one machine: shared memory, not a network), and the time a ring allreduce would
take on 1, 10 and 100 Gb/s links as a model: each rank sends and receives 2(N-1)/N of the buffer, so
t = 2(N-1)/N * bytes * 8 / bandwidth, latency left out (a few tens of microseconds per step at most
here, against tens of milliseconds of transfer). The network figures are that formula, not
measurements; compare them with an iteration's time to see where a network stops helping.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from charrnn.model import ModelConfig, parameter_shapes

SIZES = (128, 256, 512)
VOCAB, LAYERS, BATCH = 65, 2, 50
LINKS_GBPS = (1, 10, 100)


def reduced_bytes(hidden, layers=LAYERS, batch=BATCH, vocab=VOCAB):
    params = sum(int(np.prod(shape)) for shape in parameter_shapes(ModelConfig("lstm", vocab, hidden, layers)).values())
    return params, 8 * (params + 2 * layers * batch * hidden + 3)


def ring_seconds(nbytes, ranks, gbps):
    return 2 * (ranks - 1) / ranks * nbytes * 8 / (gbps * 1e9)


def measure(repeats):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    results = []
    for hidden in SIZES:
        params, nbytes = reduced_bytes(hidden)
        buffer = np.ones(nbytes // 8)
        times = []
        for attempt in range(repeats + 2):  # two untimed: connection set-up, first touch of the pages
            comm.Barrier()
            started = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            if attempt >= 2:
                times.append(time.perf_counter() - started)
        slowest = comm.allreduce(float(np.median(times)), op=MPI.MAX)
        results.append((hidden, params, nbytes, slowest))
    if comm.Get_rank() == 0:
        ranks = comm.Get_size()
        print(f"{ranks} ranks; {MPI.Get_library_version().splitlines()[0].strip()}")
        header = f"{'model':>10} {'params':>10} {'MB/iter':>8} {'measured':>10}"
        header += "".join(f" {f'{g} Gb/s N={n}':>14}" for g in LINKS_GBPS for n in (2, 8, 64))
        print(header + "   (network columns: ring model, not measured)")
        for hidden, params, nbytes, seconds in results:
            line = f"{f'2x{hidden}':>10} {params:>10,} {nbytes / 1e6:8.2f} {seconds * 1000:8.2f}ms"
            line += "".join(f" {ring_seconds(nbytes, n, g) * 1000:12.1f}ms" for g in LINKS_GBPS for n in (2, 8, 64))
            print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--ranks", type=int, default=2, help="ranks when it starts itself under mpirun")
    args = parser.parse_args()
    from charrnn.distributed import world_from_environment

    if world_from_environment() is None:
        mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
        if mpirun is None:
            sys.exit("mpirun not found; install the mpi extra: pip install -e '.[mpi]'")
        env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        command = [mpirun, "-n", str(args.ranks), sys.executable, __file__, "--repeats", str(args.repeats)]
        sys.exit(subprocess.call(command, env=env))
    measure(args.repeats)


if __name__ == "__main__":
    main()
