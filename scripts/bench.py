"""Training and sampling speed of charrnn's float32 LSTM, side by side with PyTorch CPU.

    python scripts/bench.py                      # 2 layers x H in 128,256,512, B=50, T=100, V=65
    python scripts/bench.py --hidden 128 --quick
    python scripts/bench.py --json --rounds 3    # one JSON object per hidden size

Each (engine, hidden size) measurement runs in its own child process, charrnn then torch for one
size before the next, so the two sides of a ratio see nearly the same machine load, each peak RSS
(ru_maxrss) belongs to one engine and one size, and torch never shares a process with charrnn.
Both children get the same thread count: the OpenBLAS budget for charrnn (OPENBLAS_NUM_THREADS),
torch.set_num_threads for torch. With --rounds R the pair runs R times, alternating, and the
medians over rounds are reported: on a shared machine that evens out other jobs' bursts.

A training iteration is forward + backward + clip_grad_norm + Adam step on one B x T window; its
rate is the median over the timed iterations after warm-up. Sampling is one stream, one character
at a time, temperature 1: charrnn.sampling.generate (its compiled loop, on as many threads as it
picks by default, at most --threads; "1-thread" forces one) when it exists, else a Python loop over
Model.step; torch is a Python loop with torch.multinomial under no_grad, on --threads threads.
"compile" is charrnn's first training call: loading Numba's cache, or with --cold compiling from
scratch into an empty cache directory, plus allocating the work arrays.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

VOCAB = 65
BATCH = 50
STEPS = 100
LAYERS = 2
CLIP = 5.0
LR = 2e-3
TRAIN_BUDGET_S = 12.0  # per engine and size: stop timing iterations after this (at least 3 run)
SAMPLE_BUDGET_S = 2.0


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def random_batches(count, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(count, BATCH, STEPS + 1), dtype=np.int32)  # BatchLoader's dtype
    return [(window[:, :-1], window[:, 1:]) for window in ids]


def median_seconds(function, iterations, budget_s):
    """Median duration of up to `iterations` calls; stops early once `budget_s` is spent (min 3)."""
    times = []
    started = time.perf_counter()
    while len(times) < iterations and (len(times) < 3 or time.perf_counter() - started < budget_s):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), len(times)


def first_call_seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def sample_rate(sample_chunk, max_chars):
    """Characters per second of `sample_chunk(n)` calls, within SAMPLE_BUDGET_S or max_chars."""
    sample_chunk(8)  # compiles and allocates outside the clock
    done, chunk = 0, 50
    start = time.perf_counter()
    while done < max_chars and time.perf_counter() - start < SAMPLE_BUDGET_S:
        chunk = min(chunk, max_chars - done)
        sample_chunk(chunk)
        done += chunk
        chunk *= 2
    return done / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------- charrnn
def charrnn_sampler(model, threads=None):
    """(sample_chunk(n), description): the compiled generator, or a Model.step loop without one."""
    try:
        from charrnn.sampling import generate
    except ImportError:
        generate = None
    if generate is not None:
        from charrnn.data import Vocab

        vocab = Vocab([chr(ord("!") + k) for k in range(VOCAB)])

        def sample_chunk(length):
            text = "".join(piece for _, piece in generate(model, vocab, length, temperature=1.0, seed=1,
                                                          threads=threads))
            assert len(text) == length

        return sample_chunk, "charrnn.sampling.generate"

    rng = np.random.default_rng(1)
    state = model.initial_state(1)
    char = np.zeros(1, dtype=np.int64)

    def step_loop(length):
        for _ in range(length):
            logits = model.step(char, state)[0].astype(np.float64)
            cumulative = np.cumsum(np.exp(logits - logits.max()))
            char[0] = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), VOCAB - 1)

    return step_loop, "Model.step loop (charrnn.sampling.generate is missing)"


def run_charrnn(hidden, args):
    from charrnn.model import Model, ModelConfig
    from charrnn.optim import clip_grad_norm, make_optimizer

    model = Model(ModelConfig("lstm", vocab_size=VOCAB, hidden=hidden, layers=LAYERS), dtype=np.float32)
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

    first = first_call_seconds(train_step)
    for _ in range(args.warmup):
        train_step()
    seconds, timed = median_seconds(train_step, args.iters, TRAIN_BUDGET_S)
    # One stream uses up to 2 threads by default (charrnn.sampling.Sampler); never more than torch gets.
    sample_chunk, sampler = charrnn_sampler(model, threads=1 if args.threads < 2 else None)
    one_thread_chunk, _ = charrnn_sampler(model, threads=1)
    return {
        "train_chars_per_s": BATCH * STEPS / seconds,
        "timed_iterations": timed,
        "first_call_s": first,
        "sample_chars_per_s": sample_rate(sample_chunk, args.sample_chars),
        "sample_1thread_chars_per_s": sample_rate(one_thread_chunk, args.sample_chars),
        "sampler": sampler,
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------ torch
def run_torch(hidden, args):
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
        (nn.functional.one_hot(torch.from_numpy(x.T.astype(np.int64)), VOCAB).float(),
         torch.from_numpy(y.T.astype(np.int64)).reshape(-1))
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

    first = first_call_seconds(train_step)
    for _ in range(args.warmup):
        train_step()
    seconds, timed = median_seconds(train_step, args.iters, TRAIN_BUDGET_S)

    generator = torch.Generator().manual_seed(1)
    char = torch.zeros(1, dtype=torch.long)
    sample_state = (torch.zeros(LAYERS, 1, hidden), torch.zeros(LAYERS, 1, hidden))

    @torch.no_grad()
    def sample_chunk(length):
        nonlocal char, sample_state
        for _ in range(length):
            x = nn.functional.one_hot(char, VOCAB).float().reshape(1, 1, VOCAB)
            output, sample_state = lstm(x, sample_state)
            probs = torch.softmax(head(output[0, 0]), dim=-1)  # temperature 1
            char = torch.multinomial(probs, 1, generator=generator)

    return {
        "train_chars_per_s": BATCH * STEPS / seconds,
        "timed_iterations": timed,
        "first_call_s": first,
        "sample_chars_per_s": sample_rate(sample_chunk, args.sample_chars),
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------ orchestration
def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def run_child(engine, hidden, args):
    env = dict(os.environ)
    # The same thread budget for both engines; OpenBLAS reads these when it loads.
    env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", engine, "--hidden", str(hidden),
        "--iters", str(args.iters), "--warmup", str(args.warmup), "--sample-chars", str(args.sample_chars),
        "--threads", str(args.threads),
    ]
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-cache-") as cache:
        if args.cold and engine == "charrnn":
            env["NUMBA_CACHE_DIR"] = cache  # an empty cache: the first call compiles everything
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {engine} benchmark for hidden={hidden} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(args):
    run = run_charrnn if args.worker == "charrnn" else run_torch
    print(json.dumps(run(args.hidden[0], args)))


def median_of(results, key):
    values = [result[key] for result in results if result is not None]
    return float(np.median(values)) if values else None


def measure(hidden, args, with_torch):
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run_child("charrnn", hidden, args))
        theirs.append(run_child("torch", hidden, args) if with_torch else None)
    return {
        "hidden": hidden,
        "layers": LAYERS,
        "batch": BATCH,
        "steps": STEPS,
        "vocab": VOCAB,
        "threads": args.threads,
        "rounds": args.rounds,
        "charrnn_train_chars_per_s": median_of(ours, "train_chars_per_s"),
        "torch_train_chars_per_s": median_of(theirs, "train_chars_per_s"),
        "charrnn_sample_chars_per_s": median_of(ours, "sample_chars_per_s"),
        "torch_sample_chars_per_s": median_of(theirs, "sample_chars_per_s"),
        "charrnn_sample_1thread_chars_per_s": median_of(ours, "sample_1thread_chars_per_s"),
        "charrnn_first_call_s": median_of(ours, "first_call_s"),
        "cold_compile": args.cold,
        "sampler": ours[0]["sampler"],
        "peak_rss_mb": max(result["peak_rss_mb"] for result in ours),
        "torch_peak_rss_mb": max(result["peak_rss_mb"] for result in theirs) if with_torch else None,
    }


def format_row(row):
    def number(value, width):
        return f"{value:{width}.0f}" if value is not None else f"{'-':>{width}}"

    def ratio(a, b):
        return f"{a / b:6.2f}" if a is not None and b else f"{'-':>6}"

    train, torch_train = row["charrnn_train_chars_per_s"], row["torch_train_chars_per_s"]
    sample, torch_sample = row["charrnn_sample_chars_per_s"], row["torch_sample_chars_per_s"]
    return (
        f"{row['hidden']:5d} {number(train, 10)} {number(torch_train, 10)} {ratio(train, torch_train)} "
        f"{number(sample, 11)} {number(torch_sample, 9)} {ratio(sample, torch_sample)} "
        f"{number(row['charrnn_sample_1thread_chars_per_s'], 8)} "
        f"{row['charrnn_first_call_s']:9.2f} {row['peak_rss_mb']:7.0f} {number(row['torch_peak_rss_mb'], 8)}"
    )


def hidden_sizes(text):
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=hidden_sizes, default=[128, 256, 512], help="comma-separated sizes")
    parser.add_argument("--iters", type=int, default=None, help="timed training iterations (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations after the first call")
    parser.add_argument("--sample-chars", type=int, default=None, help="most characters sampled for a rate")
    parser.add_argument("--rounds", type=int, default=1, help="alternating charrnn/torch runs per size")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both engines")
    parser.add_argument("--cold", action="store_true", help="compile from an empty Numba cache")
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a rough number fast")
    parser.add_argument("--no-torch", action="store_true", help="charrnn only")
    parser.add_argument("--json", action="store_true", help="one JSON object per hidden size")
    parser.add_argument("--worker", choices=["charrnn", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.iters = args.iters or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.sample_chars = args.sample_chars or (500 if args.quick else 20000)
    if args.worker:
        worker(args)
        return

    with_torch = not args.no_torch and torch_available()
    if not args.json:
        print(f"LSTM {LAYERS} layers, B={BATCH}, T={STEPS}, V={VOCAB}, float32, {args.threads} threads, "
              f"median of up to {args.iters} timed iterations, {args.rounds} round(s)"
              + ("" if with_torch else "; torch not measured" + ("" if args.no_torch else " (not installed)")))
        print(f"{'H':>5} {'train c/s':>10} {'torch':>10} {'ratio':>6} {'sample c/s':>11} {'torch':>9} "
              f"{'ratio':>6} {'1-thread':>8} {'compile s':>9} {'RSS MB':>7} {'torch MB':>8}")
    sampler = None
    for hidden in args.hidden:
        row = measure(hidden, args, with_torch)
        sampler = row["sampler"]
        print(json.dumps(row) if args.json else format_row(row), flush=True)
    if not args.json:
        print(f"charrnn sampler: {sampler}; compile s: charrnn's first training call "
              + ("compiling into an empty Numba cache" if args.cold else "(Numba cache loads, plus allocation)"))


if __name__ == "__main__":
    main()
