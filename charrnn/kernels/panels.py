"""Products with a weight matrix packed once into column panels, for the per-step recurrent products.

A recurrent step multiplies a thin matrix (B rows, or fewer) by the same W_h at every one of T steps.
A BLAS packs W_h into its own layout at every call, which at large H costs about as much as the
arithmetic; here W is packed once per window (`pack_panels`) and every step reuses it.

`product_tile_4` computes a 4-row tile of out = a @ W over one panel, `product_tile_5` a 5-row one: the
rows x 2 vector accumulators stay in registers through the whole depth, each step one fused
multiply-add per accumulator. It is written in LLVM IR (Numba has no vector types), with llvm.fma on
<8 x float> or <4 x double>, which LLVM lowers to whatever the CPU has. Each output element is the
fma chain over k = 0, 1, ..., K-1 from zero (or from its old value when accumulating), whatever the
tile, panel or number of rows around it, so a row's result does not depend on how a batch or a
layer is cut between threads.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from charrnn.jit import njit
from charrnn.kernels.blas import gemm_tiled

TILE_ROWS_4, TILE_ROWS_5 = 4, 5  # the two tiles' rows (the spare rows go through the 4-row one)


def _lanes(dtype):
    return 8 if dtype == types.float32 else 4


def _vector_fma(context, builder, dtype):
    """(element type, vector type, lanes, llvm.fma on that vector) for the array's dtype."""
    element = context.get_data_type(dtype)
    lanes = _lanes(dtype)
    vector = ir.VectorType(element, lanes)
    fma = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vector, [vector] * 3),
        f"llvm.fma.v{lanes}f{64 if dtype == types.float64 else 32}",
    )
    return element, vector, lanes, fma


def _arrays(context, builder, sig, args):
    """The intrinsic's first three arguments (out, left operand, panels) as array structures."""
    return [context.make_array(kind)(context, builder, value) for kind, value in zip(sig.args[:3], args[:3])]


def _address(builder, base, offset, kind):
    """A `kind` pointer `offset` bytes past `base`."""
    byte = ir.IntType(8).as_pointer()
    return builder.bitcast(builder.gep(builder.bitcast(base, byte), [offset]), kind.as_pointer())


def _splat(builder, x, vector, lanes):
    """The scalar x in every lane of `vector`."""
    one = builder.insert_element(ir.Constant(vector, None), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(
        one, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    )


def _tile_codegen(rows):
    """Code for out[row:row+rows, column:column+W] (+)= a[row:row+rows] @ panel: 2 * rows vector
    accumulators, one fma each per k (with 5 rows they, the two weight vectors and the splat take
    13 of AVX2's 16 registers)."""

    def codegen(context, builder, sig, args):
        element, vector, lanes, fma = _vector_fma(context, builder, sig.args[0].dtype)
        out_array, a_array, panel_array = _arrays(context, builder, sig, args)
        row, column, accumulate = args[3], args[4], args[5]
        out_rows, _ = cgutils.unpack_tuple(builder, out_array.strides, 2)
        a_rows, a_columns = cgutils.unpack_tuple(builder, a_array.strides, 2)
        panel_rows, _ = cgutils.unpack_tuple(builder, panel_array.strides, 2)
        depth, _ = cgutils.unpack_tuple(builder, panel_array.shape, 2)
        size = context.get_constant(types.intp, context.get_abi_sizeof(element))

        def out_slot(r, half):
            offset = builder.add(
                builder.mul(builder.add(row, ir.Constant(row.type, r)), out_rows),
                builder.mul(builder.add(column, ir.Constant(column.type, half * lanes)), size),
            )
            return _address(builder, out_array.data, offset, vector)

        accumulators = []
        for r in range(rows):
            for half in range(2):
                slot = cgutils.alloca_once(builder, vector)
                start = builder.select(accumulate, builder.load(out_slot(r, half), align=1), ir.Constant(vector, None))
                builder.store(start, slot)
                accumulators.append(slot)
        with cgutils.for_range(builder, depth) as loop:
            k = loop.index
            weights = [
                builder.load(
                    _address(
                        builder,
                        panel_array.data,
                        builder.add(
                            builder.mul(k, panel_rows),
                            ir.Constant(k.type, half * lanes * context.get_abi_sizeof(element)),
                        ),
                        vector,
                    ),
                    align=1,
                )
                for half in range(2)
            ]
            for r in range(rows):
                offset = builder.add(
                    builder.mul(builder.add(row, ir.Constant(row.type, r)), a_rows), builder.mul(k, a_columns)
                )
                splat = _splat(builder, builder.load(_address(builder, a_array.data, offset, element)), vector, lanes)
                for half in range(2):
                    slot = accumulators[2 * r + half]
                    builder.store(builder.call(fma, [splat, weights[half], builder.load(slot)]), slot)
        for r in range(rows):
            for half in range(2):
                builder.store(builder.load(accumulators[2 * r + half]), out_slot(r, half), align=1)
        return context.get_dummy_value()

    return codegen


def _tile_signature(out, a, panel):
    return types.void(out, a, panel, types.intp, types.intp, types.boolean)


@intrinsic
def product_tile_4(typingctx, out, a, panel, row, column, accumulate):
    """out[row:row+4, column:column+W] (+)= a[row:row+4] @ panel, panel (K, W) with W = 2 vectors."""
    return _tile_signature(out, a, panel), _tile_codegen(TILE_ROWS_4)


@intrinsic
def product_tile_5(typingctx, out, a, panel, row, column, accumulate):
    """As product_tile_4, on 5 rows."""
    return _tile_signature(out, a, panel), _tile_codegen(TILE_ROWS_5)


def _row_codegen(group):
    """Code for out[W*first : W*(first+group)] = x @ panels[first : first+group]: 2 * group vector
    accumulators, one fma each per k, so a column's result is product_tile_4's fma chain for its row."""

    def codegen(context, builder, sig, args):
        element, vector, lanes, fma = _vector_fma(context, builder, sig.args[0].dtype)
        out_array, x_array, panels_array = _arrays(context, builder, sig, args)
        first = args[3]
        (out_step,) = cgutils.unpack_tuple(builder, out_array.strides, 1)
        (x_step,) = cgutils.unpack_tuple(builder, x_array.strides, 1)
        panel_step, row_step, _ = cgutils.unpack_tuple(builder, panels_array.strides, 3)
        _, depth, width = cgutils.unpack_tuple(builder, panels_array.shape, 3)
        element_size = context.get_abi_sizeof(element)

        def constant(value):
            return ir.Constant(first.type, value)

        panel_offsets = [builder.mul(builder.add(first, constant(g)), panel_step) for g in range(group)]
        accumulators = []
        for _ in range(2 * group):
            slot = cgutils.alloca_once(builder, vector)
            builder.store(ir.Constant(vector, None), slot)
            accumulators.append(slot)
        with cgutils.for_range(builder, depth) as loop:
            k = loop.index
            splat = _splat(
                builder, builder.load(_address(builder, x_array.data, builder.mul(k, x_step), element)), vector, lanes
            )
            row = builder.mul(k, row_step)
            for g in range(group):
                for half in range(2):
                    offset = builder.add(builder.add(panel_offsets[g], row), constant(half * lanes * element_size))
                    weights = builder.load(_address(builder, panels_array.data, offset, vector), align=1)
                    slot = accumulators[2 * g + half]
                    builder.store(builder.call(fma, [splat, weights, builder.load(slot)]), slot)
        for g in range(group):
            for half in range(2):
                column = builder.add(builder.mul(builder.add(first, constant(g)), width), constant(half * lanes))
                slot = _address(builder, out_array.data, builder.mul(column, out_step), vector)
                builder.store(builder.load(accumulators[2 * g + half]), slot, align=1)
        return context.get_dummy_value()

    return codegen


@intrinsic
def product_row_4(typingctx, out, x, panels, first):
    """out[W*first : W*(first+4)] = x (K,) @ panels[first : first+4] (panels (P, K, W), W = 2 vectors)."""
    return types.void(out, x, panels, types.intp), _row_codegen(4)


@intrinsic
def product_row_1(typingctx, out, x, panels, first):
    """out[W*first : W*(first+1)] = x (K,) @ panels[first]."""
    return types.void(out, x, panels, types.intp), _row_codegen(1)


@njit
def row_product(out, x, panels):
    """out (>= P*width,) = x (K,) @ W, W packed by pack_panels (P, K, width): four panels at a time,
    so eight accumulators hide the fma latency while W streams through once, front to back."""
    P = panels.shape[0]
    p = 0
    while p + 4 <= P:
        product_row_4(out, x, panels, p)
        p += 4
    while p < P:
        product_row_1(out, x, panels, p)
        p += 1


PANEL_MIN_STEPS = 4  # shorter windows (one sampling step) do not repay packing W: they call the BLAS


@njit
def panel_width(W):
    """Columns per panel: two vectors of the element type."""
    return 16 if W.itemsize == 4 else 8


@njit
def pack_panels(panels, W):
    """panels (P, K, width)[p] = W[:, p*width : (p+1)*width], zero beyond W's last column."""
    P, K, width = panels.shape
    N = W.shape[1]
    for p in range(P):
        for k in range(K):
            for j in range(width):
                column = p * width + j
                panels[p, k, j] = W[k, column] if column < N else 0.0


@njit
def packed_weights(W, steps):
    """W (K, N) packed for `steps` per-step products; empty (no panels) when too few steps repay it."""
    width = panel_width(W)
    if steps < PANEL_MIN_STEPS:
        return np.zeros((0, W.shape[0], width), W.dtype)
    panels = np.empty(((W.shape[1] + width - 1) // width, W.shape[0], width), W.dtype)
    pack_panels(panels, W)
    return panels


@njit
def product_space(rows, W, panels):
    """An output array for step_product: N columns, rounded up to whole panels when packed."""
    columns = panels.shape[0] * panels.shape[2] if panels.shape[0] else W.shape[1]
    return np.empty((rows, columns), W.dtype)


@njit
def step_product(out, a, W, panels, accumulate, tile_mnk):
    """out[:, :N] (+)= a @ W (N = W's columns): on W's panels, or through the BLAS without them."""
    if panels.shape[0] == 0:
        gemm_tiled(out[:, : W.shape[1]], a, W, 1.0 if accumulate else 0.0, tile_mnk)
    else:
        panel_product(out, a, panels, accumulate)


@njit
def row_tiles(M):
    """(5-row tiles, 4-row tiles) for M rows: the most 5-row tiles that 4-row tiles complete to exactly
    M (every M >= 12, and 4, 5, 8, 9, 10); otherwise 4-row tiles alone, the 1-3 rows left going to the
    spare tile. A spare tile costs a whole one however few rows it holds, so 4 + spare beats 5 + 2."""
    fives = M // TILE_ROWS_5
    fives -= (fives - M % TILE_ROWS_4) % TILE_ROWS_4  # fives = M (mod 4): the 4-row tiles take the rest
    if fives < 0:
        return 0, M // TILE_ROWS_4
    return fives, (M - TILE_ROWS_5 * fives) // TILE_ROWS_4


@njit
def panel_product(out, a, panels, accumulate):
    """out (M, >= P*width) (+)= a (M, K) @ W, W packed by pack_panels. Rows go in 5- and 4-row tiles
    (row_tiles: a 25-row half of a 50-stream batch in 4-row tiles alone left a spare row costing a
    whole tile, 11% of the product); rows left over go through a 4-row tile on a zero-padded copy,
    so every row is computed the same way."""
    M = a.shape[0]
    P, K, width = panels.shape
    fives, fours = row_tiles(M)
    split = TILE_ROWS_5 * fives
    full = split + TILE_ROWS_4 * fours
    spare_a = np.zeros((TILE_ROWS_4, K if full < M else 0), a.dtype)
    spare_out = np.zeros((TILE_ROWS_4, width if full < M else 0), a.dtype)
    for p in range(P):
        column = p * width
        for row in range(0, split, TILE_ROWS_5):
            product_tile_5(out, a, panels[p], row, column, accumulate)
        for row in range(split, full, TILE_ROWS_4):
            product_tile_4(out, a, panels[p], row, column, accumulate)
        if full < M:
            for r in range(M - full):
                for k in range(K):
                    spare_a[r, k] = a[full + r, k]
                for j in range(width):
                    spare_out[r, j] = out[full + r, column + j] if accumulate else 0.0
            product_tile_4(spare_out, spare_a, panels[p], 0, 0, accumulate)
            for r in range(M - full):
                for j in range(width):
                    out[full + r, column + j] = spare_out[r, j]
