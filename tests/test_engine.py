"""The serving engine in-process: uniforms as charrnn sample draws them, bounded outboxes, joins and leaves."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_sampling import TEXT, trained_model

from charrnn.engine import UNIFORM_BLOCK, Controls, Engine, EngineBusy, Job, Outbox, Uniforms
from charrnn.errors import CharrnnError
from charrnn.sampling import encode_prime, generate_text

REQUESTS = [  # prime, length, seed, controls, samples
    ("the ", 900, 1, {}, 1),
    ("the cat", 400, 2, {"temperature": 0.6}, 1),
    ("", 700, 3, {"top_k": 3}, 2),
    ("a", 300, 0, {"argmax": True}, 1),
    ("the h", 1200, 5, {"top_p": 0.7, "temperature": 1.3}, 1),
    ("dog", 500, 6, {}, 3),
    ("the ", 800, 7, {"temperature": 0.9, "top_k": 6, "top_p": 0.95}, 1),
    ("mat", 250, 8, {}, 1),
]


@pytest.fixture(scope="module")
def lstm():
    model, vocab = trained_model("lstm")
    counts = np.array([TEXT.count(symbol) for symbol in vocab.symbols], float)
    return model, vocab, counts / counts.sum()


@pytest.fixture(params=[(4, 1), (16, 2)], ids=["4 rows", "16 rows on 2 threads"])
def engine(lstm, request):
    model, vocab, unigram = lstm
    rows, threads = request.param
    engine = Engine(model, vocab, unigram, max_streams=rows, chunk=7, threads=threads)
    engine.start()
    yield engine
    engine.stop()


def job_of(vocab, prime, length, seed, controls, samples):
    return Job(encode_prime(vocab, prime), length, Controls(**controls), seed, samples)


def run(engine, job, cancel_after=None):
    """The texts of a job, taken from its outbox as a client would (cancelled after some characters if asked)."""
    woken = threading.Event()
    generation = engine.submit(job, woken.set, outbox_chars=10**7)
    texts = [""] * job.num_samples
    while True:
        woken.wait()
        woken.clear()
        pieces, end = generation.outbox.take()
        for sample, text in pieces:
            texts[sample] += text
        if cancel_after is not None and sum(map(len, texts)) >= cancel_after:
            engine.cancel(generation)
            cancel_after = None
        if end is not None:
            return texts, end


def test_uniforms_are_drawn_as_charrnn_sample_draws_them():
    rng = np.random.default_rng(9)
    expected = np.concatenate(
        [rng.random((min(UNIFORM_BLOCK, 600 - start), 3)) for start in range(0, 600, UNIFORM_BLOCK)]
    )
    uniforms = Uniforms(9, 3, 600, argmax=False)
    taken = np.concatenate([uniforms.take(steps) for steps in (1, 7, 250, 13, 300, 29)])
    assert np.array_equal(taken, expected)


def test_an_outbox_holds_a_bounded_amount_and_wakes_its_reader():
    wakes = []
    outbox = Outbox(10, lambda: wakes.append(1))
    assert outbox.put([(0, "a long prime, longer than ten")])  # an empty outbox takes anything
    assert not outbox.put([(0, "x")])
    assert outbox.take() == ([(0, "a long prime, longer than ten")], None)
    assert outbox.put([(0, "abc"), (1, "defg")]) and outbox.put([(0, "hij")])
    assert not outbox.put([(1, "k")])
    outbox.finish()
    assert outbox.take() == ([(0, "abc"), (1, "defg"), (0, "hij")], ("done", None))
    assert len(wakes) == 3  # twice from empty, once at the end


def test_texts_are_charrnn_samples_alone_or_among_others(engine, lstm):
    model, vocab, unigram = lstm
    jobs = [job_of(vocab, *request) for request in REQUESTS]
    expected = [
        generate_text(
            model, vocab, length, prime=prime, seed=seed, num_samples=samples, start_probs=unigram, **controls
        )
        for prime, length, seed, controls, samples in REQUESTS
    ]
    alone = [run(engine, job) for job in jobs]
    assert [texts for texts, _ in alone] == expected
    assert all(end == ("done", None) for _, end in alone)
    for workers in (3, min(len(jobs), engine.max_streams)):  # jobs wait, join and move rows as others leave
        with ThreadPoolExecutor(workers) as pool:
            together = list(pool.map(lambda job: run(engine, job), jobs))
        assert [texts for texts, _ in together] == expected
    assert engine.status()["streams"] == 0


def test_cancelled_jobs_free_their_rows_and_the_others_go_on(engine, lstm):
    _, vocab, _ = lstm
    jobs = [job_of(vocab, *request) for request in REQUESTS]
    expected = [run(engine, job)[0] for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        cancelled = [pool.submit(run, engine, job_of(vocab, "the ", 10**6, 11, {}, 1), 300) for _ in range(2)]
        kept = list(pool.map(lambda job: run(engine, job), jobs[:4]))
    assert [texts for texts, _ in kept] == expected[:4]
    assert all(future.result()[1] == ("error", "cancelled") for future in cancelled)
    assert engine.status()["streams"] == 0 and engine.status()["cancelled"] == 2


def test_a_job_nobody_reads_is_dropped(lstm):
    model, vocab, unigram = lstm
    engine = Engine(model, vocab, unigram, max_streams=2, outbox_chars=500)
    engine.start()
    try:
        stalled = engine.submit(job_of(vocab, "the ", 10**6, 1, {}, 1))  # nobody takes its text
        texts, end = run(engine, job_of(vocab, "the ", 2000, 2, {}, 1))
        assert end == ("done", None) and len(texts[0]) == 2004
        deadline = time.monotonic() + 10
        while engine.status()["streams"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stalled.dropped and stalled.outbox.take()[1] == ("error", "the client did not read its stream")
        assert engine.status()["dropped"] == 1
    finally:
        engine.stop()


def test_a_full_engine_refuses_at_once(lstm):
    model, vocab, unigram = lstm
    engine = Engine(model, vocab, unigram, max_streams=1, max_waiting=1)  # not started: nothing leaves
    long = job_of(vocab, "", 10**6, 1, {}, 1)
    engine.submit(long)
    with pytest.raises(EngineBusy, match=r"the server is busy: 0 of 1 streams are generating and 1 requests wait"):
        engine.submit(long)
    with pytest.raises(CharrnnError, match=r"num_samples 2 is more than this server's --max-streams 1"):
        engine.submit(job_of(vocab, "", 10, 1, {}, 2))


def test_stopping_ends_every_job_with_a_message(lstm):
    model, vocab, unigram = lstm
    engine = Engine(model, vocab, unigram, max_streams=1, max_waiting=2)
    engine.start()
    running, waiting = (engine.submit(job_of(vocab, "", 10**6, seed, {}, 1)) for seed in (1, 2))
    engine.stop()
    for generation in (running, waiting):
        assert generation.outbox.take()[1] == ("error", "the server is shutting down")
    with pytest.raises(EngineBusy, match="the server is shutting down"):
        engine.submit(job_of(vocab, "", 10, 1, {}, 1))


def test_a_failing_step_ends_its_jobs_with_a_message_and_the_engine_goes_on(lstm, monkeypatch):
    model, vocab, unigram = lstm
    engine = Engine(model, vocab, unigram, max_streams=2)
    real_sample, calls = engine._sampler.sample, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("a planted failure")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(engine._sampler, "sample", fails_once)
    engine.start()
    try:
        texts, end = run(engine, job_of(vocab, "the ", 100, 1, {}, 1))
        assert end == ("error", "the server failed to generate this text (see its log)")
        texts, end = run(engine, job_of(vocab, "the ", 100, 1, {}, 1))
        assert end == ("done", None) and len(texts[0]) == 104
        assert engine.status()["streams"] == 0
    finally:
        engine.stop()
