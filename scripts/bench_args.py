"""Command-line argument types the benchmark scripts share: a bad value is a one-line usage error."""

import argparse


def positive(text):
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def positive_list(text):
    """Comma-separated whole numbers of at least 1."""
    return [positive(part) for part in text.split(",")]
