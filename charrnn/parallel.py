"""Run a minibatch as independent slices on several threads, each with a single-threaded BLAS,
and what the BLAS in use is good at (the small-matrix budget the kernels tile products to).

The per-step products of a recurrent layer (B x H times H x G*H) are too small for a multi-threaded
BLAS: its threads synchronise on every call, and when another process holds a core they spin and
wait, which can make a training step several times slower. Splitting the streams of a batch into
parts that run concurrently (Numba kernels release the GIL) keeps every core busy with whole
single-threaded products instead.

Numba's BLAS calls (np.dot, charrnn.kernels.blas) go to the library scipy.linalg.cython_blas links
to. OpenBLAS (0.3.27 and later) has a per-thread thread count, `openblas_set_num_threads_local`,
which is what each part uses; the library is found among the mapped files of this process (Linux).
Without it (another BLAS, another OS) the batch is not split and runs as one part, as before.
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

MIN_PART_ROWS = 16  # fewer streams per part and the products get too thin to pay for a thread
# OpenBLAS cores with small-matrix sgemm/dgemm kernels for M * N * K <= 100^3 (its permit functions).
SMALL_MATRIX_CORES = ("skylakex", "cooperlake", "sapphirerapids")
SMALL_MATRIX_MNK = 100**3

_lock = threading.Lock()
_controls = None  # (set_local, get, core name) once looked up; False when unavailable
_pool = None
_pool_size = 0


def _find_openblas():
    """(set_num_threads_local, get_num_threads, core name) of the OpenBLAS Numba uses, or None."""
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
            set_local = library.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        get = None
        for name in ("openblas_get_num_threads", "scipy_openblas_get_num_threads"):
            get = getattr(library, name, None)
            if get is not None:
                break
        if get is None:
            continue
        set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
        get.argtypes, get.restype = [], ctypes.c_int
        core = ""
        for name in ("openblas_get_corename", "scipy_openblas_get_corename"):
            corename = getattr(library, name, None)
            if corename is not None:
                corename.argtypes, corename.restype = [], ctypes.c_char_p
                core = (corename() or b"").decode("ascii", "replace").strip().lower()
                break
        return set_local, get, core
    return None


def _blas_controls():
    global _controls
    if _controls is None:
        with _lock:
            if _controls is None:
                _controls = _find_openblas() or False
    return _controls


def thread_budget():
    """Threads this thread's BLAS calls may use (OPENBLAS_NUM_THREADS etc.); 1 if not controllable."""
    controls = _blas_controls()
    return max(1, controls[1]()) if controls else 1


def small_gemm_budget():
    """Largest M * N * K the kernels should hand to one gemm call (0: no tiling).

    Tiling pays only where OpenBLAS has its unpacked small-matrix kernels (its AVX-512 cores);
    elsewhere the same blocks go through the packed path and run 5-10% slower than one call.
    """
    controls = _blas_controls()
    return SMALL_MATRIX_MNK if controls and controls[2] in SMALL_MATRIX_CORES else 0


def usable_cores():
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def part_count(batch):
    """Into how many slices a batch of `batch` streams is cut: one per thread the budget allows."""
    return max(1, min(thread_budget(), batch // MIN_PART_ROWS))


def split_rows(batch, parts):
    """`parts` contiguous, nearly equal slices of range(batch)."""
    bounds = [batch * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def _set_local_threads(count):
    controls = _blas_controls()
    if controls:
        controls[0](count)


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


def _in_worker(task, blas_threads):
    _set_local_threads(blas_threads)
    return task()


def run_parts(tasks):
    """Runs the callables concurrently, the first on this thread; returns their results in order.

    Each gets an equal share of the BLAS thread budget. Every task has finished when this returns,
    also when one raised (the first exception is re-raised), since they share the caller's arrays.
    """
    if len(tasks) == 1:
        return [tasks[0]()]
    blas_threads = max(1, thread_budget() // len(tasks))
    futures = [_executor(len(tasks) - 1).submit(_in_worker, task, blas_threads) for task in tasks[1:]]
    _set_local_threads(blas_threads)
    try:
        first = tasks[0]()
    finally:
        _set_local_threads(0)  # 0 hands this thread back to the process-wide setting
        for future in futures:
            future.exception()  # waits
    return [first] + [future.result() for future in futures]
