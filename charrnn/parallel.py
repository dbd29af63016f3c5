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
to, found among the mapped files of this process (Linux). Without it (another BLAS, another OS)
its thread count cannot be pinned, so the batch is not split and runs as one part, as before.
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

# OpenBLAS cores with small-matrix sgemm/dgemm kernels for M * N * K <= 100^3 (its permit functions).
SMALL_MATRIX_CORES = ("skylakex", "cooperlake", "sapphirerapids")
SMALL_MATRIX_MNK = 100**3

_lock = threading.Lock()
_controls = None  # (thread budget, core name) once looked up and pinned; False when unavailable
_pool = None
_pool_size = 0


def _find_openblas():
    """(set_num_threads, get_num_threads, core name) of the OpenBLAS Numba uses, or None."""
    try:
        import scipy.linalg.cython_blas as cython_blas

        with open(cython_blas.__file__, "rb") as module_file:
            module_bytes = module_file.read()
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except (ImportError, OSError, IndexError):
        return None
    for path in sorted(paths):
        # The library cython_blas depends on has its file name in cython_blas's dynamic section;
        # numpy's own OpenBLAS, also loaded and exporting the same names, does not.
        if os.path.basename(path).encode() not in module_bytes:
            continue
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        functions = {}
        for role, names in (("set", ("openblas_set_num_threads", "scipy_openblas_set_num_threads")),
                            ("get", ("openblas_get_num_threads", "scipy_openblas_get_num_threads")),
                            ("core", ("openblas_get_corename", "scipy_openblas_get_corename"))):
            functions[role] = next((getattr(library, n) for n in names if hasattr(library, n)), None)
        if functions["set"] is None or functions["get"] is None:
            continue
        functions["set"].argtypes, functions["set"].restype = [ctypes.c_int], None
        functions["get"].argtypes, functions["get"].restype = [], ctypes.c_int
        core = ""
        if functions["core"] is not None:
            functions["core"].argtypes, functions["core"].restype = [], ctypes.c_char_p
            core = (functions["core"]() or b"").decode("ascii", "replace").strip().lower()
        return functions["set"], functions["get"], core
    return None


def _pinned_blas():
    """Looks the BLAS up, reads its thread budget and pins it to one thread: (budget, core name)."""
    found = _find_openblas()
    if found is None:
        return None
    set_threads, get_threads, core = found
    budget = max(1, min(get_threads(), usable_cores()))
    set_threads(1)
    return budget, core


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
