"""How a training window is cut between threads: by streams (batch) or by hidden units (units).

    batch   each thread runs its own contiguous slice of the B streams through the whole window
            (charrnn.parallel.split_rows); the slices' gradients are summed. Every thread streams
            all of each W_h at every step for only its share of the rows.
    units   each thread owns a contiguous share of every layer's hidden units, with the G gate
            columns that feed them, and computes them for all B streams: the threads meet at a spin
            barrier once per step (forward: the next step needs all of h; backward: dh_{t-1} needs
            every unit's gate gradients). Each thread streams only its own columns of W_h, so at
            large H (W_h far beyond one core's L2) the per-step products run faster.

In the units split the gate axis of the work arrays is grouped by thread: thread w's block holds the
G gate blocks of its units (each `count` wide) one after another, so its product writes one
contiguous block and the cell kernels see an ordinary, narrower row (`unit_permutation`). With one
thread the grouping is the ordinary gate order.

A plan is a value: the same plan gives the same bits every time on one machine. Two plans give
results equal to float32 rounding but not to the bit, since the BLAS sums a product's terms in an
order that depends on the shape of the call it is given (seen with OpenBLAS's Haswell kernels even
for rows 0-24 of a 50-row product). So a run records its plan in its checkpoints and a resumed run
uses it, whatever this machine would choose now.
"""

from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharrnnError

SPLITS = ("batch", "units")
MIN_PART_ROWS = 16  # fewer streams per slice and the products get too thin to pay for a thread
MIN_PART_UNITS = 32  # fewer units per thread and the per-step barrier costs more than it saves


@dataclass(frozen=True)
class Plan:
    split: str = "batch"
    threads: int = 1

    def __post_init__(self):
        if self.split not in SPLITS:
            raise CharrnnError(f"unknown split {self.split!r} in a plan; expected one of {', '.join(SPLITS)}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise CharrnnError(f"a plan needs at least 1 thread, got {self.threads!r}")

    def parts(self, batch, hidden):
        """How many threads this plan uses on a window of `batch` streams of `hidden` units."""
        if self.split == "batch":
            return max(1, min(self.threads, batch // MIN_PART_ROWS))
        return max(1, min(self.threads, hidden // MIN_PART_UNITS))

    def to_dict(self):
        return {"split": self.split, "threads": self.threads}

    @classmethod
    def from_dict(cls, values):
        try:
            return cls(split=str(values["split"]), threads=int(values["threads"]))
        except KeyError as error:
            raise CharrnnError(f"a recorded plan has no {error.args[0]!r}; expected split and threads") from None
        except (TypeError, ValueError) as error:
            raise CharrnnError(f"a recorded plan is malformed ({error}); expected split and threads") from None

    def describe(self, batch=None, hidden=None):
        """In words; given a window's shape, with the threads it really uses there."""
        threads = self.threads if batch is None else self.parts(batch, hidden)
        if threads == 1 and batch is not None:
            return f"one thread ({self.split} split of {self.threads} threads, too small a window to cut)"
        what = "streams" if self.split == "batch" else "hidden units"
        return f"{self.split} split ({what} shared between {threads} thread{'s' if threads != 1 else ''})"


def unit_ranges(hidden, workers):
    """(first, count) of each thread's hidden units: contiguous, nearly equal shares."""
    bounds = [hidden * w // workers for w in range(workers + 1)]
    return [(bounds[w], bounds[w + 1] - bounds[w]) for w in range(workers)]


def unit_permutation(hidden, gates, workers):
    """Natural gate columns in the units split's order: position k of the grouped axis holds
    natural column perm[k] (block g of unit j is column g * hidden + j)."""
    order = []
    for first, count in unit_ranges(hidden, workers):
        for g in range(gates):
            order.extend(range(g * hidden + first, g * hidden + first + count))
    return np.asarray(order, dtype=np.int64)
