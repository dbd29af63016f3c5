"""Matrix products on array views through BLAS gemm, with accumulation and small-matrix tiling.

np.dot in Numba only writes whole contiguous outputs. Calling gemm directly (Numba's own
`numba_xxgemm` helper, the one behind np.dot, so the same BLAS and the compile cache still work)
adds beta (out = a @ b + beta * out: gradients accumulate without a scratch array) and views
(column blocks, transposes) without copies.

Tiling: OpenBLAS's AVX-512 build (SkylakeX kernels, also chosen for Zen 4) runs products with
M * N * K <= 100^3 in small-matrix kernels that skip packing. For a recurrent step's B x H times
H x G*H product those are 1.4-1.7x faster than the packed path, so `gemm_tiled` cuts such a product
into column and depth blocks under that size. The caller passes the budget (`tile_mnk`, 0 = one
call): it depends on which kernels the BLAS picked at run time (charrnn.parallel.small_gemm_budget).
"""

import numpy as np
from numba import types
from numba.np.linalg import ensure_blas

from charrnn.jit import njit

ensure_blas()  # numba_xxgemm calls scipy's BLAS: fail at import, with Numba's message, without it

_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,
        types.char,
        types.char,
        types.intp,
        types.intp,
        types.intp,
        types.voidptr,
        types.voidptr,
        types.intp,
        types.voidptr,
        types.intp,
        types.voidptr,
        types.voidptr,
        types.intp,
    ),
)
_N, _T = ord("N"), ord("T")


@njit
def _operand(x):
    """(transpose flag, leading dimension) of a 2-D view, seen column-major; flag 0: unusable."""
    size = x.itemsize
    rows, cols = x.shape
    if x.strides[1] == size and (rows == 1 or x.strides[0] >= cols * size):
        return _N, max(x.strides[0] // size, cols, 1)
    if x.strides[0] == size and (cols == 1 or x.strides[1] >= rows * size):
        return _T, max(x.strides[1] // size, rows, 1)
    return 0, 0


@njit
def gemm(out, a, b, beta):
    """out = a @ b + beta * out. out needs unit-stride rows; a and b unit stride along one axis
    (blocks and transposes of C arrays qualify; anything else raises)."""
    if out.shape[0] == 0 or out.shape[1] == 0:
        return
    trans_a, ld_a = _operand(a)
    trans_b, ld_b = _operand(b)
    if trans_a == 0 or trans_b == 0 or out.strides[1] != out.itemsize:
        raise ValueError("gemm needs operands with a unit stride along one axis")
    scalars = np.empty(2, out.dtype)
    scalars[0] = 1.0
    scalars[1] = beta
    kind = ord("s") if out.itemsize == 4 else ord("d")
    M, N = out.shape
    # Row-major out = a @ b is column-major out^T = b^T @ a^T: the operands swap places.
    _xxgemm(
        kind,
        trans_b,
        trans_a,
        N,
        M,
        a.shape[1],
        scalars.ctypes,
        b.ctypes,
        ld_b,
        a.ctypes,
        ld_a,
        scalars[1:].ctypes,
        out.ctypes,
        max(out.strides[0] // out.itemsize, N, 1),
    )


@njit
def gemm_tiled(out, a, b, beta, tile_mnk):
    """gemm in blocks of at most tile_mnk multiply-adds (depth <= 256, widths powers of two)."""
    M, N = out.shape
    K = a.shape[1]
    depth = min(K, 256)
    # One call when it is small enough already, or when even the narrowest block would not be.
    if tile_mnk <= 0 or M * N * K <= tile_mnk or M * 16 * depth > tile_mnk:
        gemm(out, a, b, beta)
        return
    width = 16
    while width * 2 <= N and M * (width * 2) * depth <= tile_mnk:
        width *= 2
    for j0 in range(0, N, width):
        j1 = min(N, j0 + width)
        for k0 in range(0, K, depth):
            k1 = min(K, k0 + depth)
            gemm(out[:, j0:j1], a[:, k0:k1], b[k0:k1, j0:j1], beta if k0 == 0 else 1.0)
