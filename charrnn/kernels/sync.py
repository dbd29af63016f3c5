"""A spin barrier for kernels that run on several threads at once and meet once per step.

Single-stream sampling and the units split of training share each layer's hidden units between
threads, and each step needs the whole h (or every unit's gate gradients) of the step before, so the
threads meet once per layer and step: a few
hundred nanoseconds when each has its own core, far less than the microseconds a pool or a lock
round trip costs. Numba has no atomics for the CPU target, so the two operations come from LLVM
through intrinsics: a release store publishes everything the thread wrote before it, an acquire
load makes it visible to the reader. A waiting thread pauses between polls and yields its core
after a while, so a machine with fewer free cores than threads slows down rather than stalls.

`arrivals` is an int64 array with one slot per thread, ARRIVAL_STRIDE apart (a cache line each,
so a thread announcing itself does not evict the others' slots); only its owner writes a slot.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from charrnn.jit import njit
from charrnn.portable import SCHED_YIELD, X86

ARRIVAL_STRIDE = 8  # int64 slots: 64 bytes
SPINS_BEFORE_YIELD = 2000


def _slot_pointer(context, builder, array_type, array, index):
    view = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, view, [index], wraparound=False)


@intrinsic
def load_acquire(typingctx, array, index):
    """array[index] of a 1-D int64 array, read with acquire ordering."""
    signature = types.int64(array, types.intp)

    def codegen(context, builder, sig, args):
        pointer = _slot_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(pointer, ordering="acquire", align=8)

    return signature, codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """array[index] = value in a 1-D int64 array, with release ordering."""
    signature = types.void(array, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        pointer = _slot_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store_atomic(args[2], pointer, ordering="release", align=8)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def spin_pause(typingctx):
    """x86's PAUSE (eases the core while polling); nothing elsewhere."""
    signature = types.void()

    def codegen(context, builder, sig, args):
        if X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(pause, [])
        return context.get_dummy_value()

    return signature, codegen


if SCHED_YIELD:
    _sched_yield = types.ExternalFunction("sched_yield", types.intc())

    @njit
    def yield_core():
        _sched_yield()
else:  # pragma: no cover - Windows has no sched_yield; polling with PAUSE still finishes

    @njit
    def yield_core():
        pass


@njit
def arrive_and_wait(arrivals, worker, workers, count):
    """Announces that `worker` reached its `count`-th meeting, then waits for all the others to."""
    store_release(arrivals, worker * ARRIVAL_STRIDE, count)
    for other in range(workers):
        spins = 0
        while load_acquire(arrivals, other * ARRIVAL_STRIDE) < count:
            spin_pause()
            spins += 1
            if spins == SPINS_BEFORE_YIELD:
                yield_core()
                spins = 0


GAVE_UP = 1 << 62  # an arrival count no meeting reaches: the others stop waiting for this thread


@njit
def give_up(arrivals, worker):
    """Marks `worker` as past every meeting, so threads waiting for it finish instead of spinning
    forever (its caller failed and will re-raise once they have)."""
    store_release(arrivals, worker * ARRIVAL_STRIDE, GAVE_UP)
