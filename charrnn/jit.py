"""The one place that sets Numba's compile options; every kernel is decorated with `njit` from here.

cache=True: a second process loads the compiled machine code instead of recompiling.
fastmath stays off: the float64 gradient checks must see IEEE arithmetic, and no benchmark has
shown it pays for the exp/tanh-bound gate loops.
error_model="numpy": division does not raise, so loops carry no hidden branches and vectorize.
"""

import numba

JIT_OPTIONS = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")


def njit(function):
    return numba.njit(**JIT_OPTIONS)(function)
