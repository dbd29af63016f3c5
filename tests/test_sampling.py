"""Sampling and beam search: the compiled loop against Model.step, controls, seeds, primes, bytes."""

import itertools

import numpy as np
import pytest

from charrnn.cells import CELLS
from charrnn.data import Vocab
from charrnn.errors import CharrnnError
from charrnn.kernels.sampling import draw, sort_descending
from charrnn.model import Model, ModelConfig
from charrnn.optim import make_optimizer
from charrnn.sampling import (
    Sampler,
    StreamDecoder,
    batch_cuts,
    beam_search,
    beam_search_ids,
    encode_prime,
    generate,
    generate_text,
    initial_prediction,
)

TEXT = "the cat sat on the mat. the dog ate the hat.\n" * 8


def trained_model(cell="lstm", text=TEXT, mode="utf-8", hidden=16, layers=2, steps=25, seed=0):
    """A small model trained a few Adam steps, so its predictions are far from uniform."""
    vocab = Vocab.from_text(text, mode)
    model = Model(ModelConfig(cell, len(vocab), hidden, layers), seed=seed)
    ids = vocab.encode(text).astype(np.int64)
    B, T = 4, 20
    optimizer = make_optimizer("adam", model.params, 0.02)
    for step in range(steps):
        starts = np.random.default_rng(step).integers(0, len(ids) - T - 1, size=B)
        inputs = np.stack([ids[s : s + T] for s in starts])
        targets = np.stack([ids[s + 1 : s + T + 1] for s in starts])
        grads = model.zeros_like_params()
        model.loss_and_grads(inputs, targets, model.initial_state(B), grads)
        optimizer.step(model.params, grads)
    return model, vocab


@pytest.fixture(scope="module")
def lstm():
    return trained_model("lstm")


def step_logits_after(model, vocab, prime):
    state = model.initial_state(1)
    for char_id in vocab.encode(prime):
        logits = model.step([char_id], state)
    return logits[0], state


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def sampler_after(model, vocab, prime, streams=1, **controls):
    sampler = Sampler(model, streams, **controls)
    sampler.set_state(*initial_prediction(model, encode_prime(vocab, prime)))
    return sampler


# ----------------------------------------------------------------------------------- the loop
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", list(CELLS))
def test_argmax_equals_repeated_model_step(cell, threads):
    model, vocab = trained_model(cell, steps=10)
    ids = sampler_after(model, vocab, "the ", argmax=True, threads=threads).sample(30)[:, 0]
    logits, state = step_logits_after(model, vocab, "the ")
    expected = []
    for _ in range(30):
        expected.append(int(np.argmax(logits)))
        logits = model.step([expected[-1]], state)[0]
    assert ids.tolist() == expected


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru", "lnlstm"])
def test_sampled_path_follows_model_step_states(cell, streams):
    """Whatever ids the loop samples, its logits after them are Model.step's logits after them
    (one stream runs the unit-split loop, two the batched one)."""
    model, vocab = trained_model(cell, steps=5)
    sampler = sampler_after(model, vocab, "cat", streams=streams)
    ids = sampler.sample(15, np.random.default_rng(1).random((15, streams)))[:, 0]
    logits, state = step_logits_after(model, vocab, "cat")
    for char_id in ids:
        logits = model.step([char_id], state)[0]
    np.testing.assert_allclose(sampler.logits[0], logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_first_distribution_is_softmax_of_step_logits_over_temperature(lstm, temperature):
    model, vocab = lstm
    logits, _ = step_logits_after(model, vocab, "the c")
    sampler = sampler_after(model, vocab, "the c", temperature=temperature)
    # The loop's float32 logits are Model.step's up to float32 rounding (their BLAS sums in another
    # order); the distribution is computed from the loop's own logits in float64.
    np.testing.assert_allclose(sampler.logits[0], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        sampler.next_distribution(), softmax(sampler.logits[0] / temperature), rtol=1e-12, atol=1e-15
    )


def test_sampled_first_characters_follow_the_distribution(lstm):
    model, vocab = lstm
    streams = 4000
    sampler = sampler_after(model, vocab, "the ", streams=streams, temperature=1.5)
    expected = sampler.next_distribution()
    first = sampler.sample(1, np.random.default_rng(7).random((1, streams)))[0]
    observed = np.bincount(first, minlength=len(vocab)) / streams
    # 4000 draws: each frequency is within ~4 standard errors (<= 0.032) of its probability.
    assert np.abs(observed - expected).max() < 0.035
    assert set(np.flatnonzero(observed)) <= set(np.flatnonzero(expected > 0))


def test_lower_temperature_concentrates_the_distribution(lstm):
    model, vocab = lstm
    entropies = []
    for temperature in (0.25, 0.5, 1.0, 2.0, 4.0):
        p = sampler_after(model, vocab, "the c", temperature=temperature).next_distribution()
        entropies.append(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert entropies == sorted(entropies)
    cold = sampler_after(model, vocab, "the c", temperature=0.01).next_distribution()
    logits, _ = step_logits_after(model, vocab, "the c")
    assert cold[np.argmax(logits)] > 0.999


def test_top_k_and_top_p_keep_the_most_likely_candidates(lstm):
    model, vocab = lstm
    logits = sampler_after(model, vocab, "the ").logits[0]  # the loop's own float32 logits
    full = softmax(logits)
    order = np.argsort(-full, kind="stable")
    top3 = sampler_after(model, vocab, "the ", top_k=3).next_distribution()
    expected = np.zeros_like(full)
    expected[order[:3]] = full[order[:3]] / full[order[:3]].sum()
    np.testing.assert_allclose(top3, expected, rtol=1e-12, atol=1e-15)

    nucleus = sampler_after(model, vocab, "the ", top_p=0.6).next_distribution()
    kept = int(np.searchsorted(np.cumsum(full[order]), 0.6) + 1)
    assert np.count_nonzero(nucleus) == kept
    assert set(np.flatnonzero(nucleus)) == set(order[:kept])


@pytest.mark.parametrize("controls", [{"top_k": 1}, {"top_p": 1e-9}, {"top_k": 2, "top_p": 1e-6}])
def test_keeping_one_candidate_is_argmax(lstm, controls):
    model, vocab = lstm
    greedy = sampler_after(model, vocab, "the ", argmax=True).sample(40)
    uniforms = np.random.default_rng(3).random((40, 1))
    assert np.array_equal(sampler_after(model, vocab, "the ", **controls).sample(40, uniforms), greedy)


@pytest.mark.parametrize("hidden", [19, 70])  # 70: each thread's gates fill more than four panels
@pytest.mark.parametrize("cell", [name for name, cell in CELLS.items() if cell.splits_units])
def test_one_stream_split_across_threads_equals_the_batched_loop(cell, hidden):
    """The unit-split loop on 1-3 threads, called in odd-sized chunks, samples what the batched
    loop samples and ends in the same state and prediction, to the bit (both run every product as
    the same fma chain on panels)."""
    model, vocab = trained_model(cell, steps=10, hidden=hidden)
    uniforms = np.random.default_rng(5).random((41, 2))
    batched = sampler_after(model, vocab, "the ", streams=2, top_k=5)
    expected = batched.sample(41, uniforms)[:, :1]
    for threads in (1, 2, 3):
        single = sampler_after(model, vocab, "the ", top_k=5, threads=threads)
        assert single.workers == threads
        ids = np.concatenate([single.sample(n, uniforms[a:b, :1]) for n, a, b in ((16, 0, 16), (25, 16, 41))])
        assert np.array_equal(ids, expected)
        for mine, theirs in ((single.h, batched.h), (single.c, batched.c), (single.logits, batched.logits)):
            np.testing.assert_array_equal(
                mine[:, 0] if mine.ndim == 3 else mine[0], theirs[:, 0] if theirs.ndim == 3 else theirs[0]
            )


def test_default_threads_follow_the_faster_count_and_keep_the_text(lstm, monkeypatch):
    import charrnn.sampling as sampling

    model, vocab = lstm
    monkeypatch.setattr(sampling, "SPLIT_UNITS_MIN_HIDDEN", 1)
    monkeypatch.setattr(sampling, "usable_cores", lambda: 2)
    monkeypatch.setattr(sampling, "_thread_timings", {})
    uniforms = np.random.default_rng(8).random((40 * 12, 1))
    adaptive = sampler_after(model, vocab, "the ")
    assert adaptive.workers == 2 and adaptive._adaptive
    chosen, pieces, clock = [], [], [0.0]
    real = adaptive._run_units

    def recording(workers, packs, out, chunk):
        chosen.append(workers)
        real(workers, packs, out, chunk)
        clock[0] += 0.03 if workers == 2 else 0.01  # as if another job held the second core

    monkeypatch.setattr(adaptive, "_run_units", recording)
    monkeypatch.setattr(sampling.time, "perf_counter", lambda: clock[0])
    for call in range(12):
        pieces.append(adaptive.sample(40, uniforms[40 * call : 40 * (call + 1)]))
    # Untimed first call, then each count once, then the faster with the slower re-timed every 8th call.
    assert chosen[:3] == [2, 2, 1] and chosen[3:] == [1, 1, 1, 1, 2, 1, 1, 1, 1]
    fixed = sampler_after(model, vocab, "the ", threads=1).sample(480, uniforms)
    assert np.array_equal(np.concatenate(pieces), fixed)
    # A new sampler of the same shape starts from what the first one learned.
    later = sampler_after(model, vocab, "the ")
    monkeypatch.setattr(later, "_run_units", recording)
    chosen.clear()
    later.sample(40, uniforms[:40])
    assert chosen == [1]


def test_a_long_call_re_times_the_slower_count_on_its_first_steps_only(lstm, monkeypatch):
    import charrnn.sampling as sampling

    model, vocab = lstm
    monkeypatch.setattr(sampling, "SPLIT_UNITS_MIN_HIDDEN", 1)
    monkeypatch.setattr(sampling, "usable_cores", lambda: 2)
    # Both counts timed already, one thread the slower, and this the call that re-times it.
    timings = {"calls": sampling.PROBE_EVERY - 1, "rates": {2: 1500.0, 1: 900.0}}
    cfg = model.config
    monkeypatch.setattr(sampling, "_thread_timings", {(cfg.cell, cfg.layers, cfg.hidden, "float32"): timings})
    uniforms = np.random.default_rng(9).random((300, 1))
    adaptive = sampler_after(model, vocab, "the ")
    assert adaptive._timings is timings
    chosen, real, clock = [], adaptive._run_units, [0.0]

    def recording(workers, packs, out, chunk):
        chosen.append((workers, len(out)))
        real(workers, packs, out, chunk)
        clock[0] += len(out) / timings_of_this_machine[workers]

    timings_of_this_machine = {2: 2000.0, 1: 1000.0}
    monkeypatch.setattr(adaptive, "_run_units", recording)
    monkeypatch.setattr(sampling.time, "perf_counter", lambda: clock[0])
    text = np.concatenate([adaptive.sample(200, uniforms[:200]), adaptive.sample(100, uniforms[200:])])
    steps = sampling.PROBE_STEPS
    assert chosen == [(1, steps), (2, 200 - steps), (2, 100)]
    assert timings["rates"] == pytest.approx(timings_of_this_machine)  # both re-timed: the probe's steps, the rest
    fixed = sampler_after(model, vocab, "the ", threads=1).sample(300, uniforms)
    assert np.array_equal(text, fixed)


def test_packing_the_weights_for_a_thread_count_is_not_timed_as_sampling(lstm, monkeypatch):
    # A new sampler packs its weights for a thread count on that count's first call; at H=512 that
    # took longer than 50 steps, so a rate timed with it would wrongly make that count look slow.
    import charrnn.sampling as sampling

    model, vocab = lstm
    monkeypatch.setattr(sampling, "SPLIT_UNITS_MIN_HIDDEN", 1)
    monkeypatch.setattr(sampling, "usable_cores", lambda: 2)
    timings = {"calls": 1, "rates": {}}
    cfg = model.config
    monkeypatch.setattr(sampling, "_thread_timings", {(cfg.cell, cfg.layers, cfg.hidden, "float32"): timings})
    adaptive = sampler_after(model, vocab, "the ")
    clock, real_packs, real_run = [0.0], adaptive._packs, adaptive._run_units

    def slow_packs(workers):
        clock[0] += 10.0
        return real_packs(workers)

    def running(workers, packs, out, chunk):
        real_run(workers, packs, out, chunk)
        clock[0] += len(out) / 1000.0

    monkeypatch.setattr(adaptive, "_packs", slow_packs)
    monkeypatch.setattr(adaptive, "_run_units", running)
    monkeypatch.setattr(sampling.time, "perf_counter", lambda: clock[0])
    uniforms = np.random.default_rng(12).random((80, 1))
    adaptive.sample(40, uniforms[:40])
    adaptive.sample(40, uniforms[40:])
    assert timings["rates"] == pytest.approx({2: 1000.0, 1: 1000.0})


def test_batched_streams_equal_single_stream_runs(lstm):
    model, vocab = lstm
    uniforms = np.random.default_rng(11).random((50, 3))
    batched = sampler_after(model, vocab, "the ", streams=3, top_p=0.9).sample(50, uniforms)
    for stream in range(3):
        single = sampler_after(model, vocab, "the ", top_p=0.9).sample(50, uniforms[:, stream : stream + 1])
        assert np.array_equal(batched[:, stream : stream + 1], single)


STREAM_CONTROLS = [
    {"temperature": 0.7},
    {"top_k": 3},
    {"argmax": True},
    {"top_p": 0.8, "temperature": 1.3},
    {},
]


def mixed_sampler(model, vocab):
    """Five streams, each with its own prime and controls."""
    sampler = Sampler(model, len(STREAM_CONTROLS))
    for stream, (prime, controls) in enumerate(zip(["the ", "a", "the d", "", "cat"], STREAM_CONTROLS)):
        sampler.set_state(*initial_prediction(model, encode_prime(vocab, prime)), streams=stream)
        sampler.set_controls(stream, **controls)
    return sampler


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_a_stream_computes_the_same_bits_whatever_streams_run_beside_it(cell):
    """Each stream has its own controls, and its row's arithmetic does not depend on the rows around it."""
    model, vocab = trained_model(cell, steps=10)
    uniforms = np.random.default_rng(5).random((40, len(STREAM_CONTROLS)))
    together = mixed_sampler(model, vocab)
    ids = together.sample(40, uniforms)
    for stream, controls in enumerate(STREAM_CONTROLS):
        alone = mixed_sampler(model, vocab)
        alone.copy_stream(stream, 0)  # row 0 of a batch that runs one stream
        assert np.array_equal(alone.sample(40, uniforms[:, stream : stream + 1], streams=1)[:, 0], ids[:, stream])
        assert np.array_equal(alone.h[:, 0], together.h[:, stream]) and np.array_equal(
            alone.c[:, 0], together.c[:, stream]
        )
        assert np.array_equal(alone.logits[0], together.logits[stream])
        reference = Sampler(model, 2, **controls)
        reference.set_state(*together_state(together, stream))
        assert np.array_equal(reference.next_distribution(0), together.next_distribution(stream))


def together_state(sampler, stream):
    state = np.stack([sampler.h[:, stream : stream + 1], sampler.c[:, stream : stream + 1]])
    return state, sampler.logits[stream]


@pytest.mark.parametrize("streams", [20, 17])
def test_a_batch_cut_between_threads_gives_the_same_bits(lstm, streams):
    model, vocab = lstm
    uniforms = np.random.default_rng(8).random((30, streams))
    samplers = []
    for threads in (1, 2):
        sampler = Sampler(model, 24, batch_threads=threads)
        for stream in range(streams):
            sampler.set_state(*initial_prediction(model, encode_prime(vocab, "the "[: stream % 4])), streams=stream)
            sampler.set_controls(stream, **STREAM_CONTROLS[stream % len(STREAM_CONTROLS)])
        samplers.append((sampler, sampler.sample(30, uniforms, streams=streams)))
    (one, ids_one), (two, ids_two) = samplers
    assert batch_cuts(streams, 2) == [(0, 8), (8, streams)]  # whole tiles, two threads
    assert batch_cuts(15, 2) == [(0, 15)]  # too few streams for two
    assert np.array_equal(ids_one, ids_two)
    assert np.array_equal(one.h, two.h) and np.array_equal(one.c, two.c) and np.array_equal(one.logits, two.logits)


def test_sampling_the_first_streams_leaves_the_others_alone(lstm):
    model, vocab = lstm
    sampler = mixed_sampler(model, vocab)
    h, c, logits = sampler.h.copy(), sampler.c.copy(), sampler.logits.copy()
    sampler.sample(10, np.random.default_rng(1).random((10, 2)), streams=2)
    assert not np.array_equal(sampler.h[:, :2], h[:, :2])
    assert np.array_equal(sampler.h[:, 2:], h[:, 2:]) and np.array_equal(sampler.c[:, 2:], c[:, 2:])
    assert np.array_equal(sampler.logits[2:], logits[2:])
    with pytest.raises(CharrnnError, match="streams must be from 1 to 5, got 6"):
        sampler.sample(1, np.zeros((1, 6)), streams=6)
    with pytest.raises(CharrnnError, match="temperature must be a number > 0"):
        sampler.set_controls(1, temperature=0.0)


def test_inverse_cdf_draw_edges_and_sort_ties():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    weights, order, scratch = np.empty(4), np.empty(4, np.int64), np.empty(4, np.int64)
    assert draw(logits, 0.0, 1.0, 0, 1.0, weights, order, scratch) == 0
    assert draw(logits, 0.15, 1.0, 0, 1.0, weights, order, scratch) == 1
    assert draw(logits, 1.0 - 1e-12, 1.0, 0, 1.0, weights, order, scratch) == 3
    assert draw(logits, 0.0, 1.0, 2, 1.0, weights, order, scratch) == 3  # sorted: most likely first
    weights = np.array([0.5, 2.0, 0.5, 2.0, 1.0, 0.5, 0.0])
    order, scratch = np.empty(7, np.int64), np.empty(7, np.int64)
    sort_descending(order, scratch, weights)
    assert order.tolist() == [1, 3, 4, 0, 2, 5, 6]


# ------------------------------------------------------------------------------------ generate
def test_same_seed_same_text_whatever_the_chunk_size(lstm):
    model, vocab = lstm
    texts = {
        chunk: generate_text(model, vocab, 90, prime="the", seed=42, chunk=chunk, num_samples=2, top_k=5)
        for chunk in (1, 7, 256)
    }
    assert texts[1] == texts[7] == texts[256]
    assert all(text.startswith("the") and len(text) == 93 for text in texts[1])
    assert texts[1][0] != texts[1][1]
    assert generate_text(model, vocab, 90, prime="the", seed=43, num_samples=2, top_k=5) != texts[1]


def test_pieces_stream_in_order_prime_first(lstm):
    model, vocab = lstm
    pieces = list(generate(model, vocab, 25, prime="the dog", seed=1, chunk=10, num_samples=3))
    assert [stream for stream, _ in pieces] == sorted(stream for stream, _ in pieces)
    assert pieces[0] == (0, "the dog")
    assert [len(text) for stream, text in pieces if stream == 0] == [7, 10, 10, 5]


def test_unknown_prime_characters_error_or_are_dropped(lstm):
    model, vocab = lstm
    with pytest.raises(CharrnnError, match=r"never saw: Z é.*--drop-unknown"):
        generate(model, vocab, 10, prime="the éZ")
    notes = []
    dropped = generate_text(model, vocab, 10, prime="the éZ", seed=2, drop_unknown=True, notify=notes.append)
    assert dropped == generate_text(model, vocab, 10, prime="the ", seed=2)
    assert len(notes) == 1 and "Z é" in notes[0]
    notes.clear()
    text = generate_text(model, vocab, 10, prime="ZZ", seed=2, drop_unknown=True, notify=notes.append)[0]
    assert len(text) == 10 and "without a prime" in notes[0]


def test_no_prime_starts_from_the_start_distribution(lstm):
    model, vocab = lstm
    start = np.zeros(len(vocab))
    start[vocab.encode("d")[0]] = 1.0
    for seed in range(3):
        assert generate_text(model, vocab, 5, seed=seed, start_probs=start)[0][0] == "d"
    assert generate_text(model, vocab, 8, argmax=True)[0][0] == vocab.symbols[0]  # uniform start, argmax
    with pytest.raises(CharrnnError, match="start probabilities"):
        generate(model, vocab, 5, start_probs=[1.0, 2.0])
    with pytest.raises(CharrnnError, match="start probabilities"):
        generate(model, vocab, 5, start_probs=["x"] * len(vocab))  # e.g. from a damaged checkpoint


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": 1.5}, "top-p"),
        ({"top_k": -1}, "top-k"),
        ({"num_samples": 0}, "samples"),
        ({"length": 0}, "length"),
    ],
)
def test_bad_controls_are_one_line_errors(lstm, options, message):
    model, vocab = lstm
    options = {"length": 10, **options}
    with pytest.raises(CharrnnError, match=message) as error:
        generate(model, vocab, **options)
    assert "\n" not in str(error.value)


def test_bytes_vocabulary_keeps_multibyte_characters_across_chunks():
    text = "café crème brûlée, 10€ — naïve. " * 6
    model, vocab = trained_model("gru", text=text, mode="bytes", steps=15)
    assert vocab.mode == "bytes"
    whole = generate_text(model, vocab, 120, prime="caf", seed=5, chunk=1000)[0]
    assert generate_text(model, vocab, 120, prime="caf", seed=5, chunk=1)[0] == whole
    raw = vocab.encode("é€—")
    decoder = StreamDecoder(vocab)
    assert "".join(decoder.feed(raw[i : i + 1]) for i in range(len(raw))) + decoder.finish() == "é€—"
    truncated = StreamDecoder(vocab)
    assert truncated.feed(raw[:1]) + truncated.finish() == "\ufffd"  # a dangling lead byte, at the very end only


# --------------------------------------------------------------------------------- beam search
def sequence_log_prob(model, prime_ids, ids):
    state = model.initial_state(1)
    logits = None
    for char_id in prime_ids:
        logits = model.step([char_id], state)[0]
    total = 0.0
    for char_id in ids:
        total += np.log(softmax(logits)[char_id])
        logits = model.step([char_id], state)[0]
    return total


def test_beam_width_one_is_greedy(lstm):
    model, vocab = lstm
    greedy = generate_text(model, vocab, 25, prime="the ", argmax=True)[0]
    assert beam_search(model, vocab, "the ", 25, 1) == greedy


@pytest.mark.parametrize("cell", list(CELLS))
def test_beam_search_works_on_every_cell(cell):
    model, vocab = trained_model(cell, steps=5)
    greedy = generate_text(model, vocab, 15, prime="the ", argmax=True)[0]
    assert beam_search(model, vocab, "the ", 15, 1) == greedy
    prime = encode_prime(vocab, "the ")
    ids, score = beam_search_ids(model, prime, 10, 4)
    assert score == pytest.approx(sequence_log_prob(model, prime, ids), abs=1e-4)


def test_wider_beam_is_at_least_as_likely_as_greedy(lstm):
    model, vocab = lstm
    prime = encode_prime(vocab, "a")
    greedy_ids, greedy_score = beam_search_ids(model, prime, 12, 1)
    wide_ids, wide_score = beam_search_ids(model, prime, 12, 5)
    assert wide_score >= greedy_score - 1e-9
    assert wide_score == pytest.approx(sequence_log_prob(model, prime, wide_ids), abs=1e-4)
    assert greedy_score == pytest.approx(sequence_log_prob(model, prime, greedy_ids), abs=1e-4)


def test_beam_as_wide_as_every_prefix_finds_the_exact_optimum():
    model, vocab = trained_model("rnn", text="abcab cba acb\n" * 5, hidden=6, layers=1, steps=10)
    prime = encode_prime(vocab, "a")
    V, length = len(vocab), 3
    best = max(itertools.product(range(V), repeat=length), key=lambda ids: sequence_log_prob(model, prime, ids))
    ids, score = beam_search_ids(model, prime, length, V**length)
    assert ids.tolist() == list(best)
    assert score == pytest.approx(sequence_log_prob(model, prime, best), abs=1e-4)


def test_beam_rejects_bad_width(lstm):
    model, vocab = lstm
    with pytest.raises(CharrnnError, match="beam width"):
        beam_search(model, vocab, "the", 5, 0)
