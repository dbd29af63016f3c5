"""Run a minibatch as independent slices on several threads, each with a single-threaded BLAS,
and what the BLAS in use is good at (the small-matrix budget the kernels tile products to).

The per-step products of a recurrent layer (B x H times H x G*H) are too small for a multi-threaded
BLAS: its threads synchronise on every call, and when another process holds a core they spin and
wait, which can make a training step several times slower. Splitting the streams of a batch into
parts that run concurrently (Numba kernels release the GIL) keeps every core busy with whole
single-threaded products instead.

Same input, same bits: a product's summation order depends on how many threads the BLAS splits it
between, so that number must never depend on timing. OpenBLAS's pthreads builds keep one thread
count for the whole process (`openblas_set_num_threads_local` changes it for every thread, not the
calling one), so setting it per part raced: a part could run some products on one thread and some
on two, and the same checkpoint evaluated to losses that differed in the tenth digit. So the first
use pins the BLAS to one thread for good and reads the thread budget it had before; charrnn's own
threads are the only parallelism.

Numba's BLAS calls (np.dot, charrnn.kernels.blas) go to the library scipy.linalg.cython_blas links
to (charrnn.machine.blas_info), pinned through threadpoolctl, which drives OpenBLAS, MKL and BLIS on
any OS. Where it cannot be pinned (Apple's Accelerate, or charrnn.portable forcing the fallback)
charrnn runs one thread of its own and lets the BLAS thread as it likes.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from charrnn import portable
from charrnn.machine import blas_info

# OpenBLAS cores with small-matrix sgemm/dgemm kernels for M * N * K <= 100^3 (its permit functions).
SMALL_MATRIX_CORES = ("skylakex", "cooperlake", "sapphirerapids")
SMALL_MATRIX_MNK = 100**3

_lock = threading.Lock()
_controls = None  # (thread budget, core name) once looked up and pinned; False when unavailable
_pool = None
_pool_size = 0


def _pinned_blas():
    """Pins the BLAS Numba uses to one thread: (thread budget it had before, its kernel's name).

    None where it cannot be pinned: threadpoolctl cannot control it (Apple's Accelerate, say) or
    it cannot be told which of the loaded BLAS libraries is Numba's.
    """
    if portable.FORCED:
        return None
    info = blas_info()
    if info is None:
        return None
    try:
        from threadpoolctl import ThreadpoolController

        for library in ThreadpoolController().lib_controllers:
            if library.filepath == info["filepath"]:
                budget = max(1, min(library.num_threads, usable_cores()))
                library.set_num_threads(1)
                return budget, (info.get("kernel") or "").lower()
    except Exception:  # threadpoolctl could not drive this library: run as one part, unpinned
        return None
    return None


def _blas_controls():
    global _controls
    if _controls is None:
        with _lock:
            if _controls is None:
                _controls = _pinned_blas() or False
    return _controls


def pin_blas():
    """Pins the BLAS to one thread (once per process); every model does this when it is made."""
    _blas_controls()


def thread_budget():
    """Threads charrnn may run at once: the BLAS's own count before pinning (so OPENBLAS_NUM_THREADS
    and the like still limit it), at most the usable cores; 1 when the BLAS cannot be pinned."""
    controls = _blas_controls()
    return controls[0] if controls else 1


def small_gemm_budget():
    """Largest M * N * K the kernels should hand to one gemm call (0: no tiling).

    Tiling pays only where OpenBLAS has its unpacked small-matrix kernels (its AVX-512 cores);
    elsewhere the same blocks go through the packed path and run 5-10% slower than one call.
    """
    controls = _blas_controls()
    return SMALL_MATRIX_MNK if controls and controls[1] in SMALL_MATRIX_CORES else 0


def usable_cores():
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def split_rows(batch, parts):
    """`parts` contiguous, nearly equal slices of range(batch)."""
    bounds = [batch * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def _forget_pool():
    # A forked child inherits the pool object but not its threads: start afresh there.
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(workers):
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="charrnn-part")
            _pool_size = workers
        return _pool


def run_parts(tasks):
    """Runs the callables concurrently, the first on this thread; returns their results in order.

    The BLAS is pinned to one thread first, so each task's products are single-threaded. Every
    task has finished when this returns, also when one raised (the first exception is re-raised),
    since they share the caller's arrays.
    """
    pin_blas()
    if len(tasks) == 1:
        return [tasks[0]()]
    futures = [_executor(len(tasks) - 1).submit(task) for task in tasks[1:]]
    try:
        first = tasks[0]()
    finally:
        for future in futures:
            future.exception()  # waits
    return [first] + [future.result() for future in futures]
