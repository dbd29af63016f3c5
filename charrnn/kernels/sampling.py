"""Sampling loop: B streams generate N characters in one compiled call, no Python per character.

Each step runs the training cells (lstm_cell, gru_cell, rnn_cell, lnlstm_cell) on products with
weights packed into panels once (charrnn.kernels.panels), so sampling computes what training does
and each stream's row comes out the same however many streams run beside it (which lets charrnn
serve batch strangers' requests). The kernels take named structures (namedtuples, built in
charrnn.sampling, which Numba compiles to plain fields): `net`, the weights, each per-layer field a
tuple (a numba UniTuple: layer 0's W_x (V, GH) and upper layers' (H, GH) share one array type), with
the cell's code (charrnn.cells) in net.cell; `work`, the work arrays; `controls`, temperature, top_k,
top_p and greedy, one of each per stream (arrays of B).
The state is h, c: (L, B, H), updated in place; `logits` (B, V) always holds the prediction for
the next character, so consecutive calls continue exactly where the previous one stopped.

One stream alone (`sample_units`) has no batch to share a matrix product, so each character is a
chain of matrix-vector products whose weights (3 MB at 2 x 256) stream from the shared cache. There
the hidden units of every layer are split between threads: each reads only the columns of the
weights that feed its own units, packed into panels of its own, and the threads meet
(charrnn.kernels.sync) once per layer, when the next layer needs all of h. All compute the whole
output layer and draw the same character from the same uniform, so they need not meet again. A
row's product on panels (charrnn.kernels.panels.row_product) is the batched loop's fma chain, so
one stream on any number of threads computes advance's bits; it keeps its accumulators in registers
while W streams through once, which ran a 2x256 LSTM 15-20% faster than a loop over W's rows that
loads and stores the output every four rows (AMD EPYC, Zen 3).

Randomness is an input: uniforms (N, B) in [0, 1), one per character and stream, drawn by the
caller. A character is chosen by inverse CDF over the candidates, in id order, or in descending
probability order when top-k or top-p filtering is on (ties broken by the lower id).
"""

import math

import numpy as np

from charrnn.jit import njit
from charrnn.kernels.layers import embedding_forward
from charrnn.kernels.lnlstm import layer_norm_forward, lnlstm_cell
from charrnn.kernels.panels import panel_product, row_product
from charrnn.kernels.recurrent import gru_cell, lstm_cell, rnn_cell
from charrnn.kernels.sync import arrive_and_wait

# The codes charrnn.cells gives each cell type, which these loops dispatch on.
LSTM_CODE, GRU_CODE, RNN_CODE, LNLSTM_CODE = 0, 1, 2, 3


@njit
def advance(ids, h, c, logits, net, work):
    """Reads ids (B, 1) into the state h, c (L, B, H) and writes the next logits (B, V).

    Every product runs on weights packed into panels once (net.W_x_panels, layer 0's unused: its
    input is a row gather; net.W_h_panels; net.out_panels; see charrnn.kernels.panels), where each
    row's result is the same whatever rows surround it: a stream's text does not depend on how many
    streams run beside it, or in which row. The cells are training's (lstm_cell, gru_cell, ...).
    work: gates (1, B, GH), h_seq, c_seq, aux_seq (1, B, H); x_product, recurrent (B, GH rounded up to
    whole panels), out_product (B, V rounded up); for the LN-LSTM also x_hat, r_hat (1, B, GH), c_hat
    (1, B, H), rstd (1, B, 3) (empty for other cells).
    """
    L, B, H = h.shape
    GH, V = work.gates.shape[2], logits.shape[1]
    gates, h_new, c_new, aux = work.gates[0], work.h_seq[0], work.c_seq[0], work.aux_seq[0]
    for layer in range(L):
        if layer == 0:
            embedding_forward(work.gates, net.W_x[0], net.b[0], ids)
        else:
            panel_product(work.x_product, h[layer - 1], net.W_x_panels[layer], False)
            bias = net.b[layer]
            for b in range(B):
                for k in range(GH):
                    gates[b, k] = work.x_product[b, k] + bias[k]
        if net.cell == LNLSTM_CODE:
            layer_norm_forward(gates, work.x_hat[0], work.rstd[0, :, 0], gates, net.gain_x[layer], net.shift_x[layer])
        panel_product(work.recurrent, h[layer], net.W_h_panels[layer], False)
        for b in range(B):
            a, r = gates[b], work.recurrent[b, :GH]
            if net.cell == LSTM_CODE:
                lstm_cell(a, r, c[layer, b], c_new[b], aux[b], h_new[b])
            elif net.cell == GRU_CODE:
                gru_cell(a, r, net.b_hn[layer], h[layer, b], aux[b], h_new[b])
            elif net.cell == LNLSTM_CODE:
                lnlstm_cell(
                    a,
                    r,
                    work.r_hat[0, b],
                    work.rstd[0, b],
                    net.gain_h[layer],
                    net.shift_h[layer],
                    c[layer, b],
                    c_new[b],
                    work.c_hat[0, b],
                    net.gain_c[layer],
                    net.shift_c[layer],
                    aux[b],
                    h_new[b],
                )
            else:
                rnn_cell(a, r, h_new[b])
        h[layer, :, :] = h_new
        if net.cell == LSTM_CODE or net.cell == LNLSTM_CODE:
            c[layer, :, :] = c_new
    panel_product(work.out_product, h[L - 1], net.out_panels, False)
    for b in range(B):
        for v in range(V):
            logits[b, v] = work.out_product[b, v] + net.out_b[v]


@njit
def argmax_row(row):
    best = 0
    for v in range(1, row.shape[0]):
        if row[v] > row[best]:
            best = v
    return best


@njit
def tempered_weights(weights, logits_row, temperature):
    """weights = exp((logits - max) / temperature) in float64; returns their sum."""
    peak = logits_row[argmax_row(logits_row)]
    total = 0.0
    for v in range(logits_row.shape[0]):
        w = math.exp((np.float64(logits_row[v]) - peak) / temperature)
        weights[v] = w
        total += w
    return total


@njit
def sort_descending(order, scratch, weights):
    """order = ids sorted by descending weight, ties by ascending id (bottom-up merge sort)."""
    V = order.shape[0]
    for v in range(V):
        order[v] = v
    width = 1
    source, target = order, scratch
    in_scratch = False
    while width < V:
        for start in range(0, V, 2 * width):
            middle = min(start + width, V)
            end = min(start + 2 * width, V)
            i, j = start, middle
            for k in range(start, end):
                if i < middle and (j >= end or weights[source[i]] >= weights[source[j]]):
                    target[k] = source[i]
                    i += 1
                else:
                    target[k] = source[j]
                    j += 1
        source, target = target, source
        in_scratch = not in_scratch
        width *= 2
    if in_scratch:
        order[:] = scratch


@njit
def filtered_count(order, weights, top_k, top_p):
    """How many of the sorted candidates survive top-k (0 = off), then top-p on what is left."""
    V = order.shape[0]
    kept = V if top_k <= 0 or top_k >= V else top_k
    if top_p < 1.0:
        total = 0.0
        for r in range(kept):
            total += weights[order[r]]
        threshold = top_p * total
        running = 0.0
        for r in range(kept):
            running += weights[order[r]]
            if running >= threshold:
                return r + 1
    return kept


@njit
def filtering_on(V, top_k, top_p):
    return (0 < top_k < V) or top_p < 1.0


@njit
def draw(logits_row, uniform, temperature, top_k, top_p, weights, order, scratch):
    """One character id from softmax(logits / temperature), optionally filtered, by inverse CDF."""
    V = logits_row.shape[0]
    total = tempered_weights(weights, logits_row, temperature)
    if not filtering_on(V, top_k, top_p):
        target = uniform * total
        running = 0.0
        last = 0
        for v in range(V):
            if weights[v] > 0.0:
                running += weights[v]
                last = v
                if running > target:
                    return v
        return last  # rounding left the target just above the summed weights
    sort_descending(order, scratch, weights)
    kept = filtered_count(order, weights, top_k, top_p)
    kept_total = 0.0
    for r in range(kept):
        kept_total += weights[order[r]]
    target = uniform * kept_total
    running = 0.0
    for r in range(kept):
        running += weights[order[r]]
        if running > target:
            return order[r]
    return order[kept - 1]


@njit
def sampling_distribution(probs, logits_row, temperature, top_k, top_p, order, scratch):
    """probs (V,) float64 = the distribution `draw` samples from (zero outside the candidates)."""
    V = logits_row.shape[0]
    tempered_weights(probs, logits_row, temperature)
    if filtering_on(V, top_k, top_p):
        sort_descending(order, scratch, probs)
        kept = filtered_count(order, probs, top_k, top_p)
        for r in range(kept, V):
            probs[order[r]] = 0.0
    total = 0.0
    for v in range(V):
        total += probs[v]
    for v in range(V):
        probs[v] /= total


@njit
def sample_chunk(out_ids, uniforms, logits, h, c, net, controls, work):
    """Samples out_ids (N, B): each step picks from `logits`, then reads the picks to refresh them.

    Each stream has its own controls: temperature, top_k, top_p, greedy are arrays (B,); a greedy
    stream takes the argmax and ignores its uniforms. work holds, besides advance's arrays, ids (B, 1)
    int64, weights (V,) float64, order and scratch (V,) int64.
    """
    N, B = out_ids.shape
    temperature, top_k, top_p = controls.temperature, controls.top_k, controls.top_p
    ids = work.ids
    for n in range(N):
        for b in range(B):
            if controls.greedy[b]:
                choice = argmax_row(logits[b])
            else:
                choice = draw(
                    logits[b],
                    uniforms[n, b],
                    temperature[b],
                    top_k[b],
                    top_p[b],
                    work.weights,
                    work.order,
                    work.scratch,
                )
            out_ids[n, b] = choice
            ids[b, 0] = choice
        advance(ids, h, c, logits, net, work)


# --------------------------------------------------------------------------- one stream, split units
@njit
def unit_range(worker, workers, H):
    """(first, count) of the hidden units `worker` owns: contiguous, nearly equal shares."""
    first = H * worker // workers
    return first, H * (worker + 1) // workers - first


@njit
def pack_unit_columns(packed, W, workers, H):
    """packed[w, :, :G*count_w] = the columns of W (K, G*H) that feed worker w's units, gate block
    after gate block: layer 0's row gather reads one contiguous run, and the panels made from the
    rest (charrnn.sampling.Sampler._packs) hold only the thread's own columns."""
    K, GH = W.shape
    G = GH // H
    for worker in range(workers):
        first, count = unit_range(worker, workers, H)
        for r in range(K):
            for k in range(G):
                for j in range(count):
                    packed[worker, r, k * count + j] = W[r, k * H + first + j]


@njit
def sample_units(worker, workers, arrivals, out_ids, uniforms, h_pair, c, net, controls, work):
    """One of `workers` threads sampling one stream's next N characters into out_ids (N, 1).

    The thread owns hidden units `unit_range(worker, workers, H)` of every layer, and reads only
    their weights, laid out by pack_unit_columns (leading axis `workers`): net.W_x[0][worker] (layer
    0's input is a row gather), net.b[l][worker], and net.W_x_panels[l][worker] (l > 0) and
    net.W_h_panels[l][worker], those columns packed into panels (charrnn.kernels.panels); every
    product is row_product, the fma chain the batched loop's tiles compute, so the state and the
    logits are advance's to the bit. net.b_hn, out_b and net.out_panels are whole. For cells that
    can share their units (not the LN-LSTM). Shared: h_pair (2, L, H), where step n reads
    h_pair[n % 2] and writes h_pair[(n + 1) % 2], so no thread overwrites an h another may still be
    reading; c (L, H), of which each thread updates its own units; arrivals (workers *
    ARRIVAL_STRIDE,) int64, zero on entry. The work arrays have a row per thread: pre, rec (>= G*count
    rounded up to whole panels), c_part, aux (>= count), logits (V rounded up) holding the pending
    prediction on entry and the next one on return, weights (V,) float64, order, scratch (V,) int64.
    Only worker 0 writes out_ids. With workers == 1 this is a plain single-threaded loop.
    """
    L, H = c.shape
    out_b, cell = net.out_b, net.cell
    # The stream's controls: the first of each array (the batched loop's have one per stream).
    temperature, top_k, top_p, greedy = (
        controls.temperature[0],
        controls.top_k[0],
        controls.top_p[0],
        controls.greedy[0],
    )
    pre, rec, c_part, aux, logits = work.pre, work.rec, work.c_part, work.aux, work.logits
    weights, order, scratch = work.weights, work.order, work.scratch
    V = out_b.shape[0]
    widest = (H + workers - 1) // workers  # the packs' last axis holds G blocks this wide
    G = net.W_x[0].shape[2] // widest
    first, count = unit_range(worker, workers, H)
    last = first + count
    width = G * count
    panels = (width + net.out_panels.shape[2] - 1) // net.out_panels.shape[2]  # this thread's, of each pack
    pre_row, rec_row, logits_row = pre[worker], rec[worker], logits[worker]
    my_pre, my_rec = pre_row[:width], rec_row[:width]
    my_c, my_aux, my_logits = c_part[worker, :count], aux[worker, :count], logits_row[:V]
    my_weights, my_order, my_scratch = weights[worker, :V], order[worker, :V], scratch[worker, :V]
    meetings = 0
    for step in range(out_ids.shape[0]):
        if greedy:
            choice = argmax_row(my_logits)
        else:
            choice = draw(my_logits, uniforms[step, 0], temperature, top_k, top_p, my_weights, my_order, my_scratch)
        if worker == 0:
            out_ids[step, 0] = choice
        h_old, h_new = h_pair[step % 2], h_pair[(step + 1) % 2]
        for layer in range(L):
            bias = net.b[layer][worker]
            if layer == 0:
                row = net.W_x[0][worker][choice]
                for j in range(width):
                    my_pre[j] = row[j] + bias[j]
            else:
                row_product(pre_row, h_new[layer - 1], net.W_x_panels[layer][worker][:panels])
                for j in range(width):
                    my_pre[j] = my_pre[j] + bias[j]
            row_product(rec_row, h_old[layer], net.W_h_panels[layer][worker][:panels])
            own_h = h_new[layer, first:last]
            if cell == LSTM_CODE:
                own_c = c[layer, first:last]
                lstm_cell(my_pre, my_rec, own_c, my_c, my_aux, own_h)
                for j in range(count):
                    own_c[j] = my_c[j]
            elif cell == GRU_CODE:
                gru_cell(my_pre, my_rec, net.b_hn[layer][first:last], h_old[layer, first:last], my_aux, own_h)
            else:
                rnn_cell(my_pre, my_rec, own_h)
            if workers > 1:
                meetings += 1
                arrive_and_wait(arrivals, worker, workers, meetings)
        row_product(logits_row, h_new[L - 1], net.out_panels)
        for v in range(V):
            my_logits[v] = my_logits[v] + out_b[v]
