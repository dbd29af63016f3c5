"""The one place that says which machine-specific paths this process takes, and their fallbacks.

    X86         the spin barrier eases the core with x86's PAUSE while it polls; elsewhere it polls
                without it (arm64 has YIELD, which LLVM offers under another name; plain polling
                is correct, only a little hotter).
    SCHED_YIELD the barrier gives its core away after a while with sched_yield (POSIX); Windows has
                none and keeps polling.
    FORCED      CHARRNN_PORTABLE=1 takes every fallback on any machine: no PAUSE, and a BLAS left
                unpinned with charrnn on one thread of its own (what happens where threadpoolctl
                cannot drive the BLAS). Tests use it to run the fallbacks on x86. Compiled kernels
                are cached per choice only if NUMBA_CACHE_DIR differs, so set both together.

Everything else charrnn needs is portable Python (threadpoolctl finds the BLAS on Linux, macOS and
Windows; charrnn.machine names the CPU with fallbacks).
"""

import os
import platform
import sys

FORCED = os.environ.get("CHARRNN_PORTABLE") == "1"
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") and not FORCED
SCHED_YIELD = not sys.platform.startswith("win")
