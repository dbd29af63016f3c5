"""Training and sampling speed of charrnn's float32 LSTM, side by side with PyTorch CPU.

    python scripts/bench.py                      # 2 layers x H in 128,256,512, B=50, T=100, V=65
    python scripts/bench.py --hidden 128 --quick
    python scripts/bench.py --json --rounds 3    # one JSON object per hidden size
    python scripts/bench.py --machine-only       # the machine and its sgemm rates, no training

Each engine runs in its own child process for each hidden size, so each peak RSS (ru_maxrss)
belongs to one engine and one size and torch never shares a process with charrnn. Both children get
the same thread count: the OpenBLAS budget for charrnn (OPENBLAS_NUM_THREADS), torch.set_num_threads
for torch. The two children are built, compiled and warmed up one after the other, then take
turns: the parent asks one for a slice of work (a few training iterations, or up to half a second
of sampling), waits for its answer, pauses PAUSE_S so the OpenMP threads it used stop spinning, and
asks the other; the next pair of slices runs in the opposite order. On a shared VM one engine's
rate moved by up to half between runs minutes apart (torch's per-character loop: 767-1456
characters/s over nine runs of the earlier one-child-per-round method), so a ratio is taken between
the two slices of a pair, 0.5-4 seconds apart, and "ratio" is the median over all pairs of every
round; the pairs' range is printed below the table. The rates in the table are medians over rounds
of each round's median.

A training iteration is forward + backward + clip_grad_norm + Adam step on one B x T window; a
round's --iters of them are shared out between its slices (slice_iterations). Sampling is one
stream, one character at a time, temperature 1, drawn from one long-running generator per engine:
charrnn.sampling.generate (its compiled loop, on as many threads as it picks by default, at most
--threads; "1-thread" forces one, in a third slice beside the other two) when it exists, else a
Python loop over Model.step; torch is a Python loop with torch.multinomial under no_grad, on
--threads threads. "compile" is charrnn's first training call: loading Numba's cache, or with
--cold compiling from scratch into an empty cache directory, plus allocating the work arrays.

Before the results it says what machine this is and what its sgemm does (scripts/bench_machine.py),
and from those rates the GEMM bound: the training rate a step would reach if its matrix products
were all it did, each at the rate measured for its shape; "of bound" in the table is an engine's
training rate divided by it. The rates the bound is computed from are measured again for each size
and round, in a child process just before that round's slices, so a bound and the rates set against
it see the same machine load; "bound c/s" is the median of a size's per-round bounds and "of bound"
the median of its per-round fractions. The rates printed before the table are the first measurement's.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_machine, when loaded by path
from bench_args import positive_list  # noqa: E402
from bench_machine import (  # noqa: E402
    BATCH,
    GEMM_TIMING_S,
    GEMM_TRIALS,
    LAYERS,
    STEPS,
    VOCAB,
    describe_torch,
    flops_per_char,
    measure_machine,
    print_machine,
    round_bound,
    step_gflops_record,
)

try:
    import resource
except ImportError:  # Windows
    resource = None

CLIP = 5.0
LR = 2e-3
TRAIN_BUDGET_S = 12.0  # per engine, size and round, over all its slices (each slice runs at least one iteration)
SAMPLE_BUDGET_S = 2.0  # the same for each sampler
SLICES = 4  # slices per engine and round (2 when a round times fewer iterations: slice_iterations)
PAUSE_S = 0.05  # between slices: torch's OpenMP threads spin-wait a few ms after their last parallel region
SAMPLE_PIECE_TORCH = 16  # characters per call of torch's loop; charrnn's generator yields 256
# Untimed pieces per sampler: the first compiles; charrnn's default sampler then runs (and packs its
# weights for) each thread count it chooses between (charrnn.sampling.Sampler) before any clock starts.
SAMPLER_WARMUP_PIECES = 3


def peak_rss_mb():
    if resource is None:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0**2 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def random_batches(count, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(count, BATCH, STEPS + 1), dtype=np.int32)  # BatchLoader's dtype
    return [(window[:, :-1], window[:, 1:]) for window in ids]


def first_call_seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def train_slice(train_step, iterations, budget_s):
    """Seconds of each of up to `iterations` training steps, stopping once `budget_s` is spent (min 1)."""
    times = []
    started = time.perf_counter()
    while len(times) < iterations and (not times or time.perf_counter() - started < budget_s):
        start = time.perf_counter()
        train_step()
        times.append(time.perf_counter() - start)
    return times


def sample_slice(piece, budget_s, max_chars):
    """Characters per second of `piece()` calls (each returns how many it sampled), for budget_s or max_chars."""
    done = 0
    start = time.perf_counter()
    while done < max_chars and (done == 0 or time.perf_counter() - start < budget_s):
        done += piece()
    return done / (time.perf_counter() - start)


class Engine:
    """What an engine's child process serves: its training step, its samplers by name, its facts."""

    def __init__(self, train_step, samplers, facts, warmup):
        self.facts = {"first_call_s": first_call_seconds(train_step), **facts}
        for _ in range(warmup):
            train_step()
        for piece in samplers.values():
            for _ in range(SAMPLER_WARMUP_PIECES):
                piece()  # compiles and allocates outside any clock
        self.train_step, self.samplers = train_step, samplers


# ---------------------------------------------------------------------------------------- charrnn
def charrnn_sampler(model, threads=None):
    """(piece(), description): piece() samples the next stretch of one long stream and returns how
    many characters that was: the compiled generator, or a Model.step loop where there is none."""
    try:
        from charrnn.sampling import generate
    except ImportError:
        generate = None
    if generate is not None:
        from charrnn.data import Vocab

        vocab = Vocab([chr(ord("!") + k) for k in range(VOCAB)])
        stream = generate(model, vocab, 10**9, temperature=1.0, seed=1, threads=threads)
        return (lambda: len(next(stream)[1])), "charrnn.sampling.generate"

    rng = np.random.default_rng(1)
    state = model.initial_state(1)
    char = np.zeros(1, dtype=np.int64)

    def step_loop(length=SAMPLE_PIECE_TORCH):
        for _ in range(length):
            logits = model.step(char, state)[0].astype(np.float64)
            cumulative = np.cumsum(np.exp(logits - logits.max()))
            char[0] = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), VOCAB - 1)
        return length

    return step_loop, "Model.step loop (charrnn.sampling.generate is missing)"


def charrnn_engine(hidden, args):
    from charrnn.model import Model, ModelConfig
    from charrnn.optim import clip_grad_norm, make_optimizer
    from charrnn.plan import Plan

    config = ModelConfig("lstm", vocab_size=VOCAB, hidden=hidden, layers=LAYERS)
    # The parent resolves "auto" (planned_split), so planning's compiling and memory stay out of here.
    plan = Plan(args.plan, max(1, args.threads))
    model = Model(config, dtype=np.float32, plan=plan)
    grads = model.zeros_like_params()
    optimizer = make_optimizer("adam", model.params, LR)
    batches = random_batches(8)
    state = model.initial_state(BATCH)
    position = 0

    def train_step():
        nonlocal state, position
        inputs, targets = batches[position % len(batches)]
        position += 1
        for grad in grads.values():
            grad.fill(0.0)
        _, state = model.loss_and_grads(inputs, targets, state, grads)
        clip_grad_norm(grads, CLIP)
        optimizer.step(model.params, grads)

    # One stream uses up to 2 threads by default (charrnn.sampling.Sampler); never more than torch gets.
    default, sampler = charrnn_sampler(model, threads=1 if args.threads < 2 else None)
    samplers = {"default": default}
    if args.threads > 1:
        samplers["1-thread"] = charrnn_sampler(model, threads=1)[0]
    return Engine(train_step, samplers, {"sampler": sampler, "plan": plan.split}, args.warmup)


# ------------------------------------------------------------------------------------------ torch
def torch_engine(hidden, args):
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lstm = nn.LSTM(VOCAB, hidden, num_layers=LAYERS)  # time-major input, like charrnn's kernels
    head = nn.Linear(hidden, VOCAB)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=LR)
    loss_function = nn.CrossEntropyLoss()
    batches = [
        (
            nn.functional.one_hot(torch.from_numpy(x.T.astype(np.int64)), VOCAB).float(),
            torch.from_numpy(y.T.astype(np.int64)).reshape(-1),
        )
        for x, y in random_batches(8)
    ]
    state = (torch.zeros(LAYERS, BATCH, hidden), torch.zeros(LAYERS, BATCH, hidden))
    position = 0

    def train_step():
        nonlocal state, position
        inputs, targets = batches[position % len(batches)]
        position += 1
        optimizer.zero_grad(set_to_none=False)
        output, (h, c) = lstm(inputs, state)
        loss = loss_function(head(output.reshape(-1, hidden)), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        state = (h.detach(), c.detach())

    generator = torch.Generator().manual_seed(1)
    char = torch.zeros(1, dtype=torch.long)
    sample_state = (torch.zeros(LAYERS, 1, hidden), torch.zeros(LAYERS, 1, hidden))

    @torch.no_grad()
    def piece():
        nonlocal char, sample_state
        for _ in range(SAMPLE_PIECE_TORCH):
            x = nn.functional.one_hot(char, VOCAB).float().reshape(1, 1, VOCAB)
            output, sample_state = lstm(x, sample_state)
            probs = torch.softmax(head(output[0, 0]), dim=-1)  # temperature 1
            char = torch.multinomial(probs, 1, generator=generator)
        return SAMPLE_PIECE_TORCH

    return Engine(train_step, {"default": piece}, {}, args.warmup)


# ------------------------------------------------------------------------------------ child processes
def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def child_command(worker, hiddens, args):
    """The command line and environment of a child process running `worker` for these sizes."""
    env = dict(os.environ)
    # The same thread budget for both engines; OpenBLAS reads these when it loads.
    env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--hidden", ",".join(map(str, hiddens))]
    command += ["--iters", str(args.iters), "--warmup", str(args.warmup), "--sample-chars", str(args.sample_chars)]
    command += ["--threads", str(args.threads), "--plan", args.plan] + (["--quick"] if args.quick else [])
    return command, env


def run_child(worker, hiddens, args):
    """Runs a one-shot `worker` ("machine" or "torch-info") in a child process; returns its JSON."""
    command, env = child_command(worker, hiddens, args)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {worker} benchmark for hidden={hiddens} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Session:
    """An engine's child process, built and warmed up for one hidden size, answering requests.

    The child answers on its own copy of stdout, one JSON line per request; its fd 1 goes to stderr,
    so nothing a library prints can be taken for an answer or split one."""

    def __init__(self, engine, hidden, args):
        self.engine, self.hidden = engine, hidden
        command, env = child_command(engine, [hidden], args)
        self.cache = tempfile.mkdtemp(prefix="charrnn-bench-cache-") if args.cold and engine == "charrnn" else None
        if self.cache:
            env["NUMBA_CACHE_DIR"] = self.cache  # an empty cache: the first call compiles everything
        self.errors = tempfile.TemporaryFile("w+")
        self.process = None
        try:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True
            )
            self.facts = self._answer()
        except BaseException:
            self.stop()
            raise

    def ask(self, **request):
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except OSError:  # the child has gone; _answer says how
            pass
        return self._answer()

    def train(self, iterations, budget_s):
        return self.ask(do="train", iterations=iterations, budget_s=budget_s)["seconds"]

    def sample(self, sampler, budget_s, max_chars):
        return self.ask(do="sample", sampler=sampler, budget_s=budget_s, max_chars=max_chars)["chars_per_s"]

    def close(self):
        """The child's peak RSS, once it has finished."""
        try:
            return self.ask(do="finish")["peak_rss_mb"]
        finally:
            self.stop()

    def stop(self):
        """Ends the child if it still runs and removes its Numba cache; safe to call again."""
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.cache:
            shutil.rmtree(self.cache, ignore_errors=True)
            self.cache = None

    def _answer(self):
        line = self.process.stdout.readline()
        if line:
            return json.loads(line)
        try:
            self.process.stdin.close()
        except OSError:  # what was left unsent cannot go anywhere
            pass
        code = self.process.wait()
        self.errors.seek(0)
        sys.stderr.write(self.errors.read())
        self.stop()
        raise SystemExit(f"the {self.engine} benchmark for hidden={self.hidden} failed (exit {code})")


def serve(engine, answers):
    """A session's child: its facts once ready, then one answer per request line on stdin."""

    def reply(answer):
        answers.write(json.dumps(answer) + "\n")
        answers.flush()

    reply(engine.facts)
    for line in sys.stdin:
        request = json.loads(line)
        if request["do"] == "train":
            reply({"seconds": train_slice(engine.train_step, request["iterations"], request["budget_s"])})
        elif request["do"] == "sample":
            piece = engine.samplers[request["sampler"]]
            reply({"chars_per_s": sample_slice(piece, request["budget_s"], request["max_chars"])})
        else:
            reply({"peak_rss_mb": peak_rss_mb()})
            return


ENGINES = {"charrnn": charrnn_engine, "torch": torch_engine}
WORKERS = {"machine": measure_machine, "torch-info": describe_torch}


def worker(args):
    if args.worker in ENGINES:
        answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        serve(ENGINES[args.worker](args.hidden[0], args), answers)
    else:
        print(json.dumps(WORKERS[args.worker](args)))


# ------------------------------------------------------------------------------------------ measuring
def median(values):
    values = [value for value in values if value is not None]
    return float(np.median(values)) if values else None


def slice_turns(sessions, round_index, slice_index):
    """Who goes first alternates from one slice to the next, and from one round to the next."""
    return sessions if (round_index + slice_index) % 2 == 0 else sessions[::-1]


def slice_iterations(iters):
    """Timed training iterations of each slice of a round: `iters` in all (at least one a slice), in an
    even number of slices, so that each engine goes first equally often."""
    slices = SLICES if iters >= SLICES else 2
    return [max(1, iters // slices + (index < iters % slices)) for index in range(slices)]


def measure_round(ours, theirs, args, round_index):
    """One round of alternating slices: {"train": {engine: [seconds, ...]}, "sample": {sampler: [c/s]},
    "train_pairs": [charrnn / torch per slice pair], "sample_pairs": [...]}."""
    iterations = slice_iterations(args.iters)
    slices = len(iterations)
    train = {"charrnn": [], "torch": []}
    sample = {"charrnn": [], "charrnn 1-thread": [], "torch": []}
    train_pairs, sample_pairs = [], []
    sessions = [ours] + ([theirs] if theirs else [])
    for index in range(slices):
        rates = {}
        for session in slice_turns(sessions, round_index, index):
            time.sleep(PAUSE_S)
            seconds = session.train(iterations[index], TRAIN_BUDGET_S / slices)
            train[session.engine] += seconds
            rates[session.engine] = train_rate(seconds)
        if theirs:
            train_pairs.append(rates["charrnn"] / rates["torch"])
    samplers = [(ours, "default", "charrnn")] + ([(ours, "1-thread", "charrnn 1-thread")] if args.threads > 1 else [])
    samplers += [(theirs, "default", "torch")] if theirs else []
    for index in range(slices):
        rates = {}
        for session, sampler, name in slice_turns(samplers, round_index, index):
            time.sleep(PAUSE_S)
            rates[name] = session.sample(sampler, SAMPLE_BUDGET_S / slices, args.sample_chars / slices)
            sample[name].append(rates[name])
        if theirs:
            sample_pairs.append(rates["charrnn"] / rates["torch"])
    return {"train": train, "sample": sample, "train_pairs": train_pairs, "sample_pairs": sample_pairs}


def train_rate(seconds):
    return BATCH * STEPS / float(np.median(seconds)) if seconds else None


def fraction(rate, bound):
    return rate / bound if rate is not None and bound else None


def measure(hidden, args, with_torch, machine, torch_blas):
    ours, theirs = Session("charrnn", hidden, args), None
    try:
        theirs = Session("torch", hidden, args) if with_torch else None
        rounds, bounds = [], []
        for round_index in range(args.rounds):
            bounds.append(round_bound(hidden, run_child("machine", [hidden], args)))
            rounds.append(measure_round(ours, theirs, args, round_index))
        peak, torch_peak = ours.close(), theirs.close() if theirs else None
    finally:  # a failure or Ctrl-C leaves no child running and no --cold cache behind
        for session in (ours, theirs):
            if session is not None:
                session.stop()

    def train_rates(engine):
        return [train_rate(one["train"][engine]) for one in rounds]

    def sample_rates(name):
        return [median(one["sample"][name]) for one in rounds]

    train_pairs = [pair for one in rounds for pair in one["train_pairs"]]
    sample_pairs = [pair for one in rounds for pair in one["sample_pairs"]]
    measured = [bound for bound in bounds if bound is not None]
    return {
        "hidden": hidden,
        "layers": LAYERS,
        "batch": BATCH,
        "steps": STEPS,
        "vocab": VOCAB,
        "threads": args.threads,
        "rounds": args.rounds,
        "slices_per_round": len(slice_iterations(args.iters)),
        "charrnn_train_chars_per_s": median(train_rates("charrnn")),
        "torch_train_chars_per_s": median(train_rates("torch")) if with_torch else None,
        "train_ratio": median(train_pairs),
        "train_ratios_by_pair": train_pairs,
        "timed_iterations": sum(len(one["train"]["charrnn"]) for one in rounds),
        "charrnn_sample_chars_per_s": median(sample_rates("charrnn")),
        "torch_sample_chars_per_s": median(sample_rates("torch")) if with_torch else None,
        "charrnn_sample_1thread_chars_per_s": median(
            sample_rates("charrnn 1-thread" if args.threads > 1 else "charrnn")
        ),
        "sample_ratio": median(sample_pairs),
        "sample_ratios_by_pair": sample_pairs,
        "charrnn_first_call_s": ours.facts["first_call_s"],
        "cold_compile": args.cold,
        "sampler": ours.facts["sampler"],
        "plan": ours.facts.get("plan"),
        "peak_rss_mb": peak,
        "torch_peak_rss_mb": torch_peak,
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "blas": machine["blas"],
        "torch_blas": torch_blas,
        "flops_per_char": flops_per_char(hidden),
        "sgemm_gflops": {"large": machine["sgemm_gflops"]["large"]["gflops"], **step_gflops_record(machine, hidden)},
        "bound_chars_per_s": float(np.median(measured)) if measured else None,
        "bound_chars_per_s_by_round": bounds,
        "charrnn_fraction_of_bound": median(map(fraction, train_rates("charrnn"), bounds)),
        "torch_fraction_of_bound": median(map(fraction, train_rates("torch"), bounds)) if with_torch else None,
    }


def format_row(row):
    def number(value, width, digits=0):
        return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    train, torch_train = row["charrnn_train_chars_per_s"], row["torch_train_chars_per_s"]
    sample, torch_sample = row["charrnn_sample_chars_per_s"], row["torch_sample_chars_per_s"]
    return (
        f"{row['hidden']:5d} {row['plan'] or '-':>6} {number(train, 10)} {number(torch_train, 10)} "
        f"{number(row['train_ratio'], 6, 2)} "
        f"{number(row['bound_chars_per_s'], 10)} {number(row['charrnn_fraction_of_bound'], 8, 2)} "
        f"{number(row['torch_fraction_of_bound'], 8, 2)} "
        f"{number(sample, 11)} {number(torch_sample, 9)} {number(row['sample_ratio'], 6, 2)} "
        f"{number(row['charrnn_sample_1thread_chars_per_s'], 8)} "
        f"{row['charrnn_first_call_s']:9.2f} {row['peak_rss_mb']:7.0f} {number(row['torch_peak_rss_mb'], 8)}"
    )


TABLE_HEADER = (
    f"{'H':>5} {'plan':>6} {'train c/s':>10} {'torch':>10} {'ratio':>6} {'bound c/s':>10} {'of bound':>8} "
    f"{'torch':>8} {'sample c/s':>11} {'torch':>9} {'ratio':>6} {'1-thread':>8} {'compile s':>9} "
    f"{'RSS MB':>7} {'torch MB':>8}"
)


def planned_split(hidden, args):
    """The split a training run of this shape gets on this machine (timed once, then cached), found
    in this process so the charrnn child measures only training."""
    from charrnn.model import ModelConfig
    from charrnn.planner import choose_plan

    config = ModelConfig("lstm", vocab_size=VOCAB, hidden=hidden, layers=LAYERS)
    note = (lambda message: print(message, file=sys.stderr)) if not args.json else (lambda message: None)
    return choose_plan(config, BATCH, STEPS, note=note, threads=args.threads).split


def pair_ranges(row):
    """One line: the spread of a size's per-pair ratios, which the table's ratios are the medians of."""

    def spread(pairs):
        return f"{min(pairs):.2f}-{max(pairs):.2f} over {len(pairs)} pairs" if pairs else "-"

    return (
        f"  H={row['hidden']:<4} training {spread(row['train_ratios_by_pair'])}; "
        f"sampling {spread(row['sample_ratios_by_pair'])}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=positive_list, default=[128, 256, 512], help="comma-separated sizes")
    parser.add_argument(
        "--iters", type=int, default=None, help="timed training iterations per engine and round (10, quick 3)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations after the first call")
    parser.add_argument("--sample-chars", type=int, default=None, help="most characters a sampler samples per round")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of alternating slices per size")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both engines")
    parser.add_argument("--cold", action="store_true", help="compile from an empty Numba cache")
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a rough number fast")
    parser.add_argument("--no-torch", action="store_true", help="charrnn only")
    parser.add_argument(
        "--plan",
        choices=("auto", "batch", "units"),
        default="auto",
        help="charrnn's split between threads (auto: the one a run of the shape gets here)",
    )
    parser.add_argument("--machine-only", action="store_true", help="the machine and its sgemm rates, no training")
    parser.add_argument("--json", action="store_true", help="one JSON object per hidden size")
    parser.add_argument("--worker", choices=sorted({**ENGINES, **WORKERS}), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.iters = args.iters or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.sample_chars = args.sample_chars or (500 if args.quick else 200000)
    args.gemm_timing_s = GEMM_TIMING_S * (0.4 if args.quick else 1.0)
    args.gemm_trials = 3 if args.quick else GEMM_TRIALS
    if args.worker:
        worker(args)
        return

    with_torch = not args.no_torch and torch_available()
    machine = run_child("machine", args.hidden, args)
    torch_blas = run_child("torch-info", args.hidden, args)["torch_blas"] if with_torch else None
    if args.json and args.machine_only:
        print(json.dumps({"machine": machine, "torch_blas": torch_blas}))
    elif not args.json:
        print_machine(machine, torch_blas, args)
    if args.machine_only:
        return
    if not args.json:
        print(
            f"LSTM {LAYERS} layers, B={BATCH}, T={STEPS}, V={VOCAB}, float32, {args.threads} threads, "
            f"{args.rounds} round(s) of {len(slice_iterations(args.iters))} alternating slices per engine, "
            f"{sum(slice_iterations(args.iters))} timed iterations a round"
            + ("" if with_torch else "; torch not measured" + ("" if args.no_torch else " (not installed)"))
        )
        print(TABLE_HEADER)
    sampler, rows = None, []
    for hidden in args.hidden:
        split = planned_split(hidden, args) if args.plan == "auto" else args.plan
        row = measure(hidden, argparse.Namespace(**{**vars(args), "plan": split}), with_torch, machine, torch_blas)
        sampler = row["sampler"]
        rows.append(row)
        print(json.dumps(row) if args.json else format_row(row), flush=True)
    if not args.json:
        print(
            f"charrnn sampler: {sampler}; compile s: charrnn's first training call "
            + ("compiling into an empty Numba cache" if args.cold else "(Numba cache loads, plus allocation)")
        )
        print(
            "bound c/s: the GEMM bound, training with every matrix product at the rate measured for its "
            "shape and nothing else; of bound: train c/s / bound c/s"
        )
        if with_torch:
            print("ratio: the median over slice pairs of charrnn's rate / torch's rate; their range:")
            for row in rows:
                print(pair_ranges(row))


if __name__ == "__main__":
    main()
