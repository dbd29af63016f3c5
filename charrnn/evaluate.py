"""Held-out loss of a model, and how much of a sample is copied from the training text."""

from __future__ import annotations

import math

import numpy as np

from charrnn.data import iter_eval_windows

NOVELTY_LENGTHS = tuple(range(4, 21, 2))
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying never loses information mod 2^64


def evaluate_loss(model, ids, batch_size: int = 50, seq_length: int = 100) -> dict:
    """Mean loss over the whole id array, read as contiguous streams with the state carried.

    Returns {"loss_nats", "bits_per_char", "chars"}; chars counts the predicted characters.
    """
    state = None
    total, chars = 0.0, 0
    for inputs, targets in iter_eval_windows(np.asarray(ids), batch_size, seq_length):
        if state is None:
            state = model.initial_state(inputs.shape[0])
        loss, state = model.loss(inputs, targets, state)
        total += loss * inputs.size  # a window's mean, weighted by its character count
        chars += inputs.size
    loss_nats = total / chars
    return {"loss_nats": loss_nats, "bits_per_char": loss_nats / math.log(2), "chars": chars}


def _codes(text) -> np.ndarray:
    """Symbols as integers: code points of a str, values of bytes, or an integer array as is."""
    if isinstance(text, str):
        return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if isinstance(text, (bytes, bytearray)):
        return np.frombuffer(bytes(text), dtype=np.uint8).astype(np.uint64)
    return np.asarray(text).astype(np.uint64).reshape(-1)


def _substring_hashes(codes: np.ndarray, lengths):
    """{n: hash of every length-n substring} by a rolling polynomial hash mod 2^64.

    Collisions (which would count a novel substring as copied) have probability about
    len(train) / 2^64 per substring: negligible at these lengths.
    """
    wanted, hashes = set(lengths), {}
    current = codes + np.uint64(1)  # so a run of zeros differs from a shorter run
    for n in range(1, max(wanted) + 1):
        if n > 1:
            current = current[:-1] * _HASH_BASE + (codes[n - 1 :] + np.uint64(1))
        if current.size == 0:
            break
        if n in wanted:
            hashes[n] = current
    return hashes


def _contained(values: np.ndarray, sorted_pool: np.ndarray) -> np.ndarray:
    """Which values occur in sorted_pool (a binary search each: np.isin/np.unique are far slower here)."""
    at = np.searchsorted(sorted_pool, values)
    at[at == sorted_pool.size] = 0
    return sorted_pool[at] == values


def novel_substring_fractions(sample_text, train_text, lengths=NOVELTY_LENGTHS) -> dict:
    """{n: fraction of the sample's length-n substrings (all positions) absent from the training text}.

    Substrings are compared exactly as symbols (str with str, bytes with bytes, or id arrays).
    Lengths longer than the sample are left out; a substring longer than the training text is novel.
    """
    lengths = sorted({int(n) for n in lengths})
    if not lengths or lengths[0] < 1:
        raise ValueError("substring lengths must be at least 1")
    sample_hashes = _substring_hashes(_codes(sample_text), lengths)
    train_hashes = _substring_hashes(_codes(train_text), lengths)
    fractions = {}
    for n in lengths:
        if n not in sample_hashes:
            continue
        if n not in train_hashes:
            fractions[n] = 1.0
            continue
        fractions[n] = float(1.0 - _contained(sample_hashes[n], np.sort(train_hashes[n])).mean())
    return fractions
