"""Data-parallel training over MPI: the pieces in one process, then real `mpirun -n 2` jobs against one process."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn.checkpoint import load_checkpoint, resolve_checkpoint
from charrnn.distributed import (
    MARKER_LIFETIME_S,
    AgreedError,
    StepReducer,
    World,
    remove_stale_markers,
    world_from_environment,
)

# --- finding the world without MPI ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ, world",
    [
        ({}, None),
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}, (1, 4)),
        ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"}, None),  # mpirun -n 1: one process
        ({"PMI_RANK": "2", "PMI_SIZE": "3"}, (2, 3)),  # MPICH, Intel MPI, srun --mpi=pmi2
        ({"PMIX_RANK": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8"}, (0, 8)),  # srun --mpi=pmix
        ({"PMIX_RANK": "1"}, (1, 0)),  # PMIx without Slurm: MPI says the size
        ({"SLURM_STEP_ID": "3", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}, (1, 2)),  # srun, no MPI plugin
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "7"}, None),  # a batch script, not a step
        ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}, None),
    ],
)
def test_the_world_is_read_from_the_launchers_environment(environ, world):
    assert world_from_environment(environ) == world


def test_one_process_is_a_world_of_one():
    world = World()
    assert (world.rank, world.size, world.writer, world.distributed) == (0, 1, True, False)
    assert world.stream_share(50) == (0, 50) and world.gather("x") == ["x"] and world.broadcast(3) == 3
    world.check_same_start({"lr": 0.002})
    world.check_same_params({"w": np.ones(3)}, 10)


def test_a_batch_that_does_not_split_evenly_is_one_line():
    world = World()
    world.size, world.rank = 4, 1
    assert world.stream_share(48) == (12, 12)
    with pytest.raises(
        AgreedError,
        match=r"--batch-size 50 does not split evenly between 4 ranks; use a multiple of 4 \(e.g. 48 or 52\), or start a number of ranks that divides 50",
    ):
        world.stream_share(50)


def test_each_rank_plans_with_its_share_of_the_cores():
    world = World()
    world.local_size = 2
    assert world.thread_share(budget=8, cores_here=8, cores_machine=8) == 4  # unbound: an equal share
    assert world.thread_share(budget=8, cores_here=2, cores_machine=8) == 2  # bound by the launcher
    world.local_size = 16
    assert world.thread_share(budget=8, cores_here=8, cores_machine=8) == 1


def test_abort_markers_of_long_ended_jobs_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    old, recent, other = (
        tmp_path / name for name in ("charrnn-mpi-a.aborted", "charrnn-mpi-b.aborted", "keep.aborted")
    )
    for path in (old, recent, other):
        path.touch()
    now = time.time()
    os.utime(old, (now - MARKER_LIFETIME_S - 60,) * 2)
    os.utime(other, (now - MARKER_LIFETIME_S - 60,) * 2)
    remove_stale_markers(now)
    assert not old.exists() and recent.exists() and other.exists()


def test_the_step_reducer_packs_and_unpacks_one_buffer():
    params = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    reducer = StepReducer(World(), params, carried_shape=(2, 1, 4, 3))
    grads = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.full(4, 0.5, np.float32)}
    expected = {name: grad.copy() for name, grad in grads.items()}
    rows = np.ones((2, 1, 2, 3), np.float32)
    loss, carried, failed, stop = reducer.reduce(grads, 1.25, rows, slice(2, 4), failed=False, stop=True)
    assert (loss, failed, stop) == (1.25, False, True) and carried.dtype == np.float32
    assert carried[:, :, 2:].tolist() == rows.tolist() and not carried[:, :, :2].any()
    for name in grads:
        assert np.array_equal(grads[name], expected[name])
    assert reducer.nbytes == 8 * (3 + 6 + 4 + 24)
    assert reducer.reduce(grads, float("nan"), rows, slice(0, 2), failed=True, stop=False)[2] is True


# --- real MPI jobs: `mpirun -n 2` against one process ------------------------------------------------------

MPI_MISSING = "needs MPI: pip install -e '.[mpi]' (mpi4py and the Open MPI wheel)"
SMALL = ["--hidden", "16", "--layers", "2", "--batch-size", "4", "--seq-length", "16", "--dropout", "0.2"]
SMALL += ["--sample-length", "10", "--print-every", "5", "--plan", "batch"]


def mpirun():
    pytest.importorskip("mpi4py", reason=MPI_MISSING)
    found = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
    if found is None:
        pytest.skip(MPI_MISSING)
    return [found, "--oversubscribe"]


def mpi_env():
    # Open MPI refuses root unless told; CI runs as root.
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def charrnn(*args):
    return [sys.executable, "-m", "charrnn", *map(str, args)]


def run(command, timeout=240):
    return subprocess.run(command, capture_output=True, text=True, env=mpi_env(), timeout=timeout)


def our_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("charrnn: error:")]


def latest_meta(run_dir):
    return load_checkpoint(resolve_checkpoint(run_dir, "latest"))[1]


_ONE_STEP = r"""
import sys
import numpy as np
from charrnn.distributed import DataParallel, join_world
from charrnn.model import Model, ModelConfig

world = join_world()
model = Model(ModelConfig("lstm", 11, 24, 2, dropout=0.3, weight_drop=0.2), seed=3)
rng = np.random.default_rng(0)
inputs, targets = rng.integers(0, 11, size=(2, 8, 12))
carried = rng.normal(size=model.initial_state(8).shape).astype(np.float32)
grads = model.zeros_like_params()
loss, state = DataParallel(world, model, 8).loss_and_grads(model, inputs, targets, carried, grads, np.random.default_rng(5))
if world.writer:
    np.savez(sys.argv[1], loss=loss, state=state, **grads)
"""


def test_one_steps_gradients_equal_one_processes_to_float32_rounding(tmp_path):
    launcher = mpirun()
    for name, prefix in (("two", [*launcher, "-n", "2"]), ("one", [])):
        result = run([*prefix, sys.executable, "-c", _ONE_STEP, tmp_path / f"{name}.npz"])
        assert result.returncode == 0, result.stderr
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert abs(float(two["loss"]) - float(one["loss"])) <= 1e-6 * abs(float(one["loss"]))
    np.testing.assert_allclose(two["state"], one["state"], rtol=1e-6, atol=1e-7)
    for name in one.files:
        scale = np.abs(one[name]).max()
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6 * scale, err_msg=name)


def test_a_short_run_on_two_ranks_ends_where_one_process_does_and_resumes_on_one(tiny_corpus, tmp_path):
    launcher = mpirun()
    common = [tiny_corpus, *SMALL, "--eval-every", "12"]
    two = run([*launcher, "-n", "2", *charrnn("train", *common, "--max-iters", "12", "--out", tmp_path / "two")])
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("stopped (reached --max-iters 12)") == 1  # rank 0 alone speaks and writes
    one = run(charrnn("train", *common, "--max-iters", "24", "--out", tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    at_12 = load_checkpoint(next((tmp_path / "one").glob("ckpt_iter000012_*.npz")))[1]
    two_meta = latest_meta(tmp_path / "two")
    assert two_meta["world_size"] == 2 and two_meta["iteration"] == 12
    assert abs(two_meta["val_loss"] - at_12["val_loss"]) <= 1e-4
    resumed = run(charrnn("train", "--resume", tmp_path / "two", "--max-iters", "24"))  # 2 ranks -> 1
    assert resumed.returncode == 0, resumed.stderr
    assert "trained on 2 rank(s), this run has 1" in resumed.stdout
    assert latest_meta(tmp_path / "two")["world_size"] == 1
    assert abs(latest_meta(tmp_path / "two")["val_loss"] - latest_meta(tmp_path / "one")["val_loss"]) <= 1e-4


def test_a_time_budgeted_cosine_on_two_ranks_fixes_one_end_for_both(tiny_corpus, tmp_path):
    """Each rank times its own iterations; how many to time and where the cosine ends are rank 0's,
    decided at an iteration every rank reaches, so the ranks' collectives stay in step."""
    launcher = mpirun()
    budget = ["--lr-schedule", "cosine", "--max-minutes", "0.15", "--eval-every", "200"]
    result = run(
        [*launcher, "-n", "2", *charrnn("train", tiny_corpus, *SMALL, *budget, "--out", tmp_path / "run")], 120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("schedule: cosine fixed to end at iteration") == 1
    assert result.stdout.count("stopped (reached") == 1
    timed = re.search(r"over iterations 6-(\d+),", result.stdout)
    assert timed and int(timed.group(1)) > 25  # 4% of the budget holds more than the 20 timed anyway
    assert latest_meta(tmp_path / "run")["schedule_end"] > int(timed.group(1))


def test_a_batch_that_does_not_split_between_the_ranks_is_one_line(tiny_corpus, tmp_path):
    launcher = mpirun()
    args = charrnn("train", tiny_corpus, *SMALL, "--batch-size", "5", "--out", tmp_path / "run")
    result = run([*launcher, "-n", "2", *args])
    assert result.returncode != 0 and not (tmp_path / "run").exists()
    assert our_lines(result.stderr) == [
        "charrnn: error: --batch-size 5 does not split evenly between 2 ranks; use a multiple of 2 (e.g. 4 or 6), "
        "or start a number of ranks that divides 5"
    ]


def test_ranks_started_with_other_options_are_one_line(tiny_corpus, tmp_path):
    launcher = mpirun()
    args = ["train", tiny_corpus, *SMALL, "--out", tmp_path / "run", "--max-iters", "3"]
    result = run(
        [*launcher, "-n", "1", *charrnn(*args, "--lr", "0.01"), ":", "-n", "1", *charrnn(*args, "--lr", "0.02")]
    )
    assert result.returncode != 0
    (line,) = our_lines(result.stderr)
    assert "rank 1 was started with other options or another corpus than rank 0 (they differ in: lr)" in line


def test_a_killed_rank_ends_the_job_in_one_line_and_the_last_checkpoint_resumes(tiny_corpus, tmp_path):
    launcher = mpirun()
    out = tmp_path / "run"
    args = charrnn("train", tiny_corpus, *SMALL, "--max-iters", "100000", "--checkpoint-every", "5", "--out", out)
    job = subprocess.Popen(
        [*launcher, "-n", "2", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env()
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "latest.json").exists() or len(list(out.glob("ckpt_iter*.npz"))) < 2:
            assert job.poll() is None and time.monotonic() < deadline, (
                job.stderr.read() if job.poll() is not None else "slow"
            )
            time.sleep(0.2)
        os.kill(rank_pid(out, 1), signal.SIGKILL)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    (line,) = our_lines(stderr)
    assert "rank 1 (pid" in line and "died (killed or crashed)" in line
    assert f"mpirun -n 2 charrnn train --resume {out}" in line
    iteration = latest_meta(out)["iteration"]
    resumed = run(charrnn("train", "--resume", out, "--max-iters", str(iteration + 3)))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and latest_meta(out)["iteration"] == iteration + 3


def rank_pid(out, rank):
    """The pid of the rank whose command line names run directory `out`."""
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ and str(out).encode() in cmdline:
            return int(entry.name)
    raise AssertionError(f"no process for rank {rank}")
