"""Data-parallel training over MPI: N processes (ranks) train one model, and N changes the speed, not the result.

Launched the way HPC jobs are (`mpirun -n N charrnn train ...`, `srun` under Slurm), charrnn finds the
MPI world in the launcher's environment (world_from_environment: Open MPI's OMPI_COMM_WORLD_*, the
PMI_* of MPICH, Intel MPI and Slurm's pmi2, PMIx's PMIX_RANK, Slurm's step variables). Without one,
or with one process, nothing changes and mpi4py is never imported.

In a world of N ranks:
  - --batch-size stays the global number of streams; rank r trains the contiguous streams
    [r*B/N, (r+1)*B/N) of every window (stream_share), drawing the whole batch's dropout masks from
    the same generator and keeping its rows (charrnn.model.Model.stream_share), so every rank's RNG,
    data position and decisions stay those of one process.
  - Every iteration one allreduce sums, in float64, a buffer holding every gradient, the loss, a
    "not finite" flag, a "stop" flag and the carried hidden state (each rank's rows, zeros elsewhere,
    so the sum assembles the whole state on every rank). Float64: each rank's gradient is a float32
    sum over its streams, and adding N of them in float64 then rounding once to float32 makes the
    result independent of the order the MPI library adds them in (its algorithm depends on N and the
    message size) to well below float32 rounding, so N = 1, 2 or 8 agree to float32 rounding, and the
    library's fixed algorithm makes each N give the same bits every run. The price is twice the bytes
    of a float32 reduction (see the README's scaling model).
  - Clipping, the divergence guard and the schedule then see the global gradient and loss, identical
    on every rank, so every rank applies the same update; every CHECK_EVERY iterations the ranks
    compare a checksum of their parameters and stop with one line if they ever differ.
  - Rank 0 alone evaluates and writes (a charrnn.run_dir.RunDir that is not the writer elsewhere). The
    carried state is whole on every rank, so rank 0 saves without asking the others, and a checkpoint
    resumes with any number of ranks (it records the world size, but nothing depends on it).
  - Each rank plans its threads from its share of the node's cores (thread_share).
  - A rank that dies ends the job with one line naming it (watch_peers); an error that every rank
    meets (AgreedError) is printed by rank 0 alone; one that a single rank meets is printed by it and
    ends the job (abort).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from charrnn.errors import CharrnnError

MARKER_LIFETIME_S = 24 * 3600

INSTALL = "pip install -e '.[mpi]'"
CHECK_EVERY = 100  # iterations between parameter checksum comparisons
# (rank variable, size variable) of each launcher, most specific first.
_LAUNCHERS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI's mpirun/prterun
    ("PMI_RANK", "PMI_SIZE"),  # MPICH's hydra, Intel MPI, srun --mpi=pmi2
    ("PMIX_RANK", None),  # PMIx: srun --mpi=pmix, prterun (the size comes from Slurm or MPI itself)
)


class AgreedError(CharrnnError):
    """A CharrnnError that every rank meets at the same point (a check of values they all share): rank 0
    prints it, the others end quietly."""


def world_from_environment(environ=None) -> tuple[int, int] | None:
    """(rank, size) an MPI launcher gave this process, or None: not launched by one, or one process.
    A size the variables do not say is 0 (MPI will tell)."""
    env = os.environ if environ is None else environ
    slurm_step = "SLURM_STEP_ID" in env  # inside `srun`, not merely inside a Slurm allocation
    slurm_size = env.get("SLURM_STEP_NUM_TASKS") if slurm_step else None
    for rank_var, size_var in _LAUNCHERS:
        if rank_var in env:
            size = env.get(size_var) if size_var else slurm_size
            return _world(env[rank_var], size if size is not None else "0")
    if slurm_step and "SLURM_PROCID" in env and slurm_size not in (None, "1"):
        return _world(env["SLURM_PROCID"], slurm_size)  # srun without an MPI plugin: MPI_Init will say
    return None


def _world(rank, size):
    try:
        rank, size = int(rank), int(size)
    except ValueError:
        return None
    return None if size == 1 else (rank, size)


class World:
    """This process's place among the ranks training one model; World() is a single process."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.local_size = 1
        self._peers = []  # (rank, host, pid) of every rank, for watch_peers
        if comm is not None:
            from mpi4py import MPI

            node = comm.Split_type(MPI.COMM_TYPE_SHARED)
            self.local_size = node.Get_size()
            node.Free()

    @property
    def distributed(self) -> bool:
        return self.comm is not None

    @property
    def writer(self) -> bool:
        """Whether this rank evaluates and writes the run's files (rank 0)."""
        return self.rank == 0

    def stream_share(self, batch: int) -> tuple[int, int]:
        """(first stream, streams) of this rank's contiguous share of a global batch."""
        if batch % self.size:
            lower, upper = batch - batch % self.size, batch + self.size - batch % self.size
            raise AgreedError(
                f"--batch-size {batch} does not split evenly between {self.size} ranks; use a multiple of "
                f"{self.size} (e.g. {lower or upper} or {upper}), or start a number of ranks that divides {batch}"
            )
        share = batch // self.size
        return self.rank * share, share

    def thread_share(self, budget: int, cores_here: int, cores_machine: int) -> int:
        """Threads this rank's plan may use: its launcher's binding when it bound the rank to fewer
        cores than the machine has, else an equal share of the machine between the node's ranks."""
        if cores_here < cores_machine:
            return max(1, min(budget, cores_here))
        return max(1, budget // self.local_size)

    # ---------------------------------------------------------------------- collectives
    def gather(self, value):
        """value of every rank, in rank order (small picklable values)."""
        return [value] if self.comm is None else self.comm.allgather(value)

    def broadcast(self, value):
        """Rank 0's value on every rank."""
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def check_same_start(self, fields: dict) -> None:
        """Refuses ranks started differently: fields (JSON-able: the options, the corpus's sha256 and
        size, the vocabulary) must be rank 0's on every rank."""
        everyone = self.gather(json.dumps(fields, sort_keys=True, default=str))
        first = json.loads(everyone[0])
        for rank, encoded in enumerate(everyone[1:], start=1):
            theirs = json.loads(encoded)
            if theirs != first:
                differ = sorted(key for key in set(first) | set(theirs) if first.get(key) != theirs.get(key))
                raise AgreedError(
                    f"rank {rank} was started with other options or another corpus than rank 0 (they differ in: "
                    f"{', '.join(differ)}); start every rank with the same command and the same corpus"
                )

    def check_same_params(self, params: dict, iteration: int) -> None:
        """Every rank's parameters must be the same bits; a difference ends the run with one line."""
        if self.comm is None:
            return
        digest = hashlib.blake2b(digest_size=16)
        for name in sorted(params):
            digest.update(np.ascontiguousarray(params[name]).data)
        digests = self.gather(digest.hexdigest())
        differ = [rank for rank, value in enumerate(digests) if value != digests[0]]
        if differ:
            raise AgreedError(
                f"after iteration {iteration} the parameters of rank(s) {', '.join(map(str, differ))} differ from "
                "rank 0's (a faulty node or an MPI library whose reduction is not the same on every rank); "
                "resume from the last checkpoint, leaving out the node that differs"
            )

    # ------------------------------------------------------------------------- failures
    def watch_peers(self, resume_hint: str) -> None:
        """When the launcher stops the job (SIGTERM: a rank died, or the job was cancelled), prints one
        line saying which rank died, where that can be seen (ranks on this node), and how to resume;
        the lowest rank still alive on the node prints it.

        The main thread may be blocked inside an MPI call then, where no Python signal handler runs, and
        the signal may reach any thread (the BLAS's among them). So the handlers only make Python write
        the signal's number to a socket (signal.set_wakeup_fd, done in C by whichever thread got it),
        and a thread of ours waiting on that socket does the rest."""
        if self.comm is None:
            return
        self._peers = self.gather((self.rank, socket.gethostname(), os.getpid()))
        remove_stale_markers()
        receiver, sender = socket.socketpair()
        sender.setblocking(False)
        signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, lambda signum, frame: None)
        self._wakeup = (receiver, sender)  # kept open for the life of the process
        thread = threading.Thread(target=self._wait_for_the_end, args=(resume_hint,), daemon=True)
        thread.start()

    def _wait_for_the_end(self, resume_hint):
        receiver = self._wakeup[0]
        while True:
            received = receiver.recv(1)
            # SIGINT (Ctrl-C) is the trainer's: it finishes its iteration and rank 0 saves a checkpoint.
            if not received or received[0] in (signal.SIGTERM, signal.SIGHUP):
                break
        host = socket.gethostname()
        local = [(rank, pid) for rank, peer_host, pid in self._peers if peer_host == host]
        dead = [rank for rank, pid in local if not _alive(pid)]
        alive_below = [rank for rank, pid in local if rank < self.rank and rank not in dead]
        if _marker(self._peers).exists():
            os._exit(1)  # a rank met an error, printed it and aborted the job: nothing to add
        message = None
        if dead and not alive_below:
            who = ", ".join(f"rank {rank} (pid {dict(local)[rank]} on {host})" for rank in dead)
            message = f"{who} of {self.size} died (killed or crashed), so the job is stopping; {resume_hint}"
        elif self.rank == 0:
            message = f"the MPI job was stopped by its launcher (a rank on another node died, or the job was cancelled); {resume_hint}"
        if message:
            os.write(2, f"charrnn: error: {message}\n".encode())
        os._exit(1)

    def abort(self, error: BaseException) -> None:
        """Ends every rank after this one met an error the others did not: prints it (one line), marks
        the job so the others' watchers add nothing, and asks MPI to stop the job."""
        if not isinstance(error, AgreedError) or self.writer:
            message = error if isinstance(error, CharrnnError) else f"rank {self.rank}: {error!r}"
            os.write(2, f"charrnn: error: {message}\n".encode())
        if self.comm is None:
            return
        self.leaving()
        sys.stderr.flush()
        self.comm.Abort(1)

    def leaving(self) -> None:
        """Marks the job, on this node, as ended by a rank that said why (an error, a Ctrl-C), so the
        other ranks' watchers do not report it as a death."""
        try:
            _marker(self._peers).touch()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed rank stays a zombie until the launcher reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _marker(peers) -> Path:
    """A file on this node that says the job was aborted by a rank that printed its own error."""
    key = hashlib.sha256(repr(sorted(peers)).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"charrnn-mpi-{key}.aborted"


def remove_stale_markers(now: float | None = None) -> None:
    """Deletes this node's abort markers of jobs that ended over MARKER_LIFETIME_S ago: only a job's
    own ranks read its marker, in the seconds its launcher takes to stop them."""
    now = time.time() if now is None else now
    for marker in Path(tempfile.gettempdir()).glob("charrnn-mpi-*.aborted"):
        try:
            if now - marker.stat().st_mtime > MARKER_LIFETIME_S:
                marker.unlink()
        except OSError:  # another rank (or job) removed it first, or it is not ours to remove
            pass


def join_world() -> World:
    """The world this process was launched into: World() without a launcher (mpi4py not imported),
    else MPI's COMM_WORLD. One-line errors for a missing mpi extra, an MPI that does not start, or a
    launcher whose ranks MPI does not join into one world."""
    launched = world_from_environment()
    if launched is None:
        return World()
    rank, size = launched
    try:
        import mpi4py

        mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI
        from mpi4py import MPI
    except ImportError:
        raise AgreedError(
            f"this process was started by an MPI launcher (rank {rank} of {size or 'several'}) but mpi4py is "
            f"missing; charrnn train needs the mpi extra: {INSTALL}"
        ) from None
    except Exception as error:  # the MPI library failed to load or to initialise
        raise AgreedError(
            f"MPI did not start ({error}); check the MPI installation (mpirun -n 2 python -c "
            "'from mpi4py import MPI'), or run charrnn without mpirun"
        ) from None
    world = World(MPI.COMM_WORLD)
    if size and world.size != size:
        raise AgreedError(
            f"the launcher started {size} processes but MPI joined them into worlds of {world.size}; launch "
            "with an MPI-aware launcher (mpirun, or srun --mpi=pmix / --mpi=pmi2) so they form one job"
        )
    return world


class StepReducer:
    """The one allreduce of each iteration: gradients, loss, flags and the carried state, summed in
    float64 over the ranks (see the module docstring)."""

    _LOSS, _FAILED, _STOP = range(3)

    def __init__(self, world: World, params: dict, carried_shape: tuple):
        self.world = world
        self.names = list(params)
        self.shapes = [params[name].shape for name in self.names]
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int) + 3
        self.carried_shape = tuple(carried_shape)
        state_size = int(np.prod(self.carried_shape))
        self.buffer = np.zeros(int(self.offsets[-1]) + state_size, dtype=np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes each rank contributes to the allreduce of one iteration."""
        return self.buffer.nbytes

    def reduce(self, grads, loss, carried_rows, rows: slice, failed: bool, stop: bool):
        """(summed loss, whole carried state (float32), any rank failed, any rank wants to stop)."""
        buffer = self.buffer
        buffer[self._LOSS] = 0.0 if failed else loss
        buffer[self._FAILED] = 1.0 if failed else 0.0
        buffer[self._STOP] = 1.0 if stop else 0.0
        for name, start, stop_at in zip(self.names, self.offsets[:-1], self.offsets[1:]):
            buffer[start:stop_at] = grads[name].reshape(-1)
        state = buffer[self.offsets[-1] :].reshape(self.carried_shape)
        state.fill(0.0)
        if not failed:
            state[:, :, rows] = carried_rows
        if self.world.comm is not None:
            from mpi4py import MPI

            self.world.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        for name, shape, start, stop_at in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:]):
            grads[name][...] = buffer[start:stop_at].reshape(shape)
        return (
            float(buffer[self._LOSS]),
            state.astype(np.float32),
            bool(buffer[self._FAILED] > 0),
            bool(buffer[self._STOP] > 0),
        )


class DataParallel:
    """A Trainer's share of the work as one of the world's ranks; with World() (one process) every
    method is what one process does, and costs nothing."""

    def __init__(self, world: World, model, batch: int):
        self.world = world
        first, count = world.stream_share(batch)
        self.rows = slice(first, first + count)
        self.reducer = None
        self._stop_vote = self._stop_agreed = False
        if world.distributed:
            model.stream_share = (first, batch)
            shape = model.initial_state(batch).shape
            self.reducer = StepReducer(world, model.params, shape)

    def loss_and_grads(self, model, inputs, targets, carried, grads, rng):
        """(loss, carried state) of the whole batch's window, its gradients in `grads`: this rank's
        streams forward and backward, then the one allreduce of the iteration, so the gradients, the
        loss and the state are the whole batch's on every rank. A loss that is not finite on any rank
        raises NonFiniteLoss on every rank, so they all roll back together."""
        from charrnn.model import NonFiniteLoss

        if self.reducer is None:
            return model.loss_and_grads(inputs, targets, carried, grads, rng)
        rows, failure = self.rows, None
        try:
            loss, rows_state = model.loss_and_grads(inputs[rows], targets[rows], carried[:, :, rows], grads, rng)
        except NonFiniteLoss as error:
            loss, rows_state, failure = 0.0, None, error
        loss, carried, failed, self._stop_agreed = self.reducer.reduce(
            grads, loss, rows_state, rows, failure is not None, self._stop_vote
        )
        if failed:
            raise NonFiniteLoss(str(failure) if failure else "the loss became non-finite on another rank")
        return loss, carried

    def time_is_up(self, here: bool) -> bool:
        """Whether a time limit ends the run: this process's clock alone, or, between ranks, whether any
        rank's clock said so at the last iteration (every rank stops after the same iteration)."""
        if self.reducer is None:
            return here
        self._stop_vote = here
        return self._stop_agreed

    def check_params(self, params, iteration: int, every: int = CHECK_EVERY) -> None:
        if self.reducer is not None and iteration % every == 0:
            self.world.check_same_params(params, iteration)

    def together(self, make):
        """make() on every rank; a CharrnnError on any of them becomes, on every rank, an AgreedError
        with the first one's words (naming its rank), so rank 0 prints it and no rank waits for another."""
        return together(self.world, make)


def together(world: World, make):
    """See DataParallel.together: for steps every rank takes before training (starting the run)."""
    if world.comm is None:
        return make()
    result = failure = None
    try:
        result = make()
    except CharrnnError as error:
        failure = str(error)
    failures = world.gather(failure)
    for rank, message in enumerate(failures):
        if message is not None:
            same = all(other == message for other in failures)
            raise AgreedError(message if same or rank == 0 else f"rank {rank}: {message}")
    return result
