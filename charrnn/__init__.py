"""charrnn: character-level recurrent language models with hand-derived, Numba-compiled backprop."""

__version__ = "0.1.0"
