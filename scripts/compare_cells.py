"""Train two or more cell types under the same time budget and options, and print what each reached.

    python scripts/compare_cells.py CORPUS --minutes 3 [--cells lstm,lnlstm] [--parallel] [--out DIR] -- TRAIN_OPTIONS

Each cell trains with `charrnn train CORPUS --model CELL --max-minutes M TRAIN_OPTIONS` into DIR/CELL,
then the table gives, per cell: iterations done, the validation loss of its last evaluation and the
best of its evaluations (nats/char, as the run measured them), and training characters per second (iterations x batch x
sequence length over the training seconds the checkpoint records, compilation excluded).

--parallel runs the cells at the same time, each on a core of its own (taskset) with one thread, so
they share the machine alike; without it they run one after the other with the whole machine.
Defaults without TRAIN_OPTIONS: scripts/recipe_3min.sh's options (2x256 LSTM-sized, Adam 5e-3 decayed
0.85 per epoch after the second, no dropout). The machine's CPU and BLAS are printed first.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RECIPE_3MIN = (
    "--layers 2 --hidden 256 --seq-length 100 --batch-size 50 --lr 5e-3 --lr-decay 0.85 --lr-decay-after 2 "
    "--dropout 0 --eval-every 250 --print-every 50"
).split()


def option_value(options, name, default):
    return int(options[options.index(name) + 1]) if name in options else default


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--cells", default="lstm,lnlstm")
    parser.add_argument("--parallel", action="store_true", help="each cell on its own core, at the same time")
    parser.add_argument("--out", default="runs/compare-cells")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    options = argv[split + 1 :] or RECIPE_3MIN
    cells = args.cells.split(",")

    from charrnn.machine import blas_info, blas_summary, cpu_model

    print(f"cpu: {cpu_model()}; blas: {blas_summary(blas_info())}")
    print(
        f"corpus {args.corpus}; {args.minutes:g} minutes each; {'in parallel, one core each' if args.parallel else 'one after the other'}"
    )
    print("options: " + " ".join(options))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    runs = {}
    for k, cell in enumerate(cells):
        out = Path(args.out) / cell
        command = ["charrnn", "train", args.corpus, "--model", cell, "--max-minutes", str(args.minutes), *options]
        command += ["--out", str(out)]
        env = dict(os.environ)
        if args.parallel:
            command = ["taskset", "-c", str(k % os.cpu_count())] + command
            env["OPENBLAS_NUM_THREADS"] = "1"  # charrnn's thread budget follows the BLAS's
        with open(Path(args.out) / f"{cell}.log", "w") as log:
            runs[cell] = (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), out)
        if not args.parallel:
            runs[cell][0].wait()
    rows = []
    for cell, (process, out) in runs.items():
        if process.wait() != 0:
            sys.exit(f"{cell} failed; see {Path(args.out) / (cell + '.log')}")
        info = json.loads(subprocess.check_output(["charrnn", "info", str(out), "--which", "latest", "--json"]))
        chars = (
            info["iteration"] * option_value(options, "--batch-size", 50) * option_value(options, "--seq-length", 100)
        )
        rows.append(
            (cell, info["iteration"], info["val_loss_nats"], info["best_val_loss_nats"], chars / info["train_seconds"])
        )
    print(f"{'cell':8} {'iterations':>10} {'last val':>9} {'best val':>9} {'chars/s':>9}")
    for cell, iterations, last, best, rate in rows:
        print(f"{cell:8} {iterations:>10} {last:>9.4f} {best:>9.4f} {rate:>9.0f}")


if __name__ == "__main__":
    main()
