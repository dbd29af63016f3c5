"""Data-parallel training over MPI: the pieces in one process, then real `mpirun -n 2` jobs against one process."""

import numpy as np
import pytest

from charrnn.distributed import AgreedError, StepReducer, World, world_from_environment

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
        match=r"--batch-size 50 does not split evenly between 4 ranks; use a multiple of 4 \(e.g. 48 or 52\), or start 5 ranks",
    ):
        world.stream_share(50)


def test_each_rank_plans_with_its_share_of_the_cores():
    world = World()
    world.local_size = 2
    assert world.thread_share(budget=8, cores_here=8, cores_machine=8) == 4  # unbound: an equal share
    assert world.thread_share(budget=8, cores_here=2, cores_machine=8) == 2  # bound by the launcher
    world.local_size = 16
    assert world.thread_share(budget=8, cores_here=8, cores_machine=8) == 1


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
