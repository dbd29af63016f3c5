"""Corpus loading, the symbol vocabulary, train/val/test splits and minibatching.

A corpus is read either as Unicode text ("utf-8": symbols are characters) or as raw bytes
("bytes": symbols are the byte values that occur). Either way it becomes one array of symbol
ids in the smallest unsigned dtype that fits the vocabulary, so a 100 MB corpus stays 100 MB.

The ids may also be a read-only memory mapping of a prepared corpus (charrnn.prepared). The loaders
here then let go of the pages they have read every few windows (release_pages), so a process's
resident memory holds the windows in use, not the part of the corpus read so far.
"""

from __future__ import annotations

import math
import mmap
import numbers
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharrnnError

UTF8, BYTES = "utf-8", "bytes"
ENCODINGS = (UTF8, BYTES)
_ENCODING_ALIASES = {"utf-8": UTF8, "utf8": UTF8, "bytes": BYTES, "byte": BYTES, "raw": BYTES}

# Text files essentially never contain NUL; UTF-16 text and binaries are full of them.
_MAX_NUL_FRACTION = 0.001
# Symbols per chunk when counting and mapping: numpy widens index arrays to int64, and
# text to UTF-32, so whole-corpus temporaries would cost 4-8x the corpus size.
_CHUNK = 1 << 22
_BOM = "\ufeff"
# Windows a loader reads from a memory-mapped corpus between two releases of its pages: a window
# touches a page or two per stream, so this bounds what stays resident to a few MB.
RELEASE_EVERY = 64


def normalize_encoding(encoding: str) -> str:
    """Return "utf-8" or "bytes" for a user-given encoding name, or raise CharrnnError."""
    key = str(encoding).strip().lower()
    if key not in _ENCODING_ALIASES:
        raise CharrnnError(f"unknown encoding {encoding!r}; use --encoding utf-8 or --encoding bytes")
    return _ENCODING_ALIASES[key]


def id_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer dtype that can hold ids 0..vocab_size-1."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def printable_symbol(symbol: str | int) -> str:
    """A symbol (a character or a byte value) as messages and listings print it: short, visible,
    unambiguous and plain text (every invisible symbol becomes an escape).

    Space becomes "␣", newline/tab/CR become \\n \\t \\r, other invisible characters and
    non-ASCII bytes become \\xNN / \\uNNNN escapes, and a backslash is doubled.
    """
    if isinstance(symbol, (int, np.integer)):
        value = int(symbol)
        if value >= 0x80:
            return f"\\x{value:02x}"  # a lone byte of a multi-byte sequence is not a character
        symbol = chr(value)
    special = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "␣": "\\u2423"}
    if symbol in special:
        return special[symbol]
    code = ord(symbol)
    if symbol.isprintable() and unicodedata.category(symbol) not in ("Zs", "Mn", "Me", "Cf"):
        return symbol
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def symbol_caption(ch: str) -> str:
    """A character as one visible glyph, for plot tick labels where an escape would not fit:
    newline, space and tab become ↵ ␣ ⇥, other invisible spaces U+XXXX, control characters
    their control pictures (see terminal_safe). Not unambiguous: a caption, not a message."""
    special = {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}.get(ch)
    if special:
        return special
    if ch.isspace() and ord(ch) >= 0x80:
        return f"U+{ord(ch):04X}"  # line/paragraph separators and odd spaces would be invisible
    return terminal_safe(ch)


def terminal_safe(ch: str) -> str:
    """ch with control characters made visible, so corpus text cannot drive the terminal
    (newline and tab pass: they lay text out)."""
    code = ord(ch)
    if ch in "\n\t":
        return ch
    if code < 0x20:
        return chr(0x2400 + code)  # control pictures: NUL..US -> U+2400..U+241F
    if code == 0x7F:
        return "\u2421"
    if 0x80 <= code < 0xA0:
        return "\ufffd"  # C1 controls (0x9b is CSI on some terminals)
    return ch


class Vocab:
    """Sorted symbol set of a corpus with encode/decode between text and id arrays.

    mode "utf-8": symbols are one-character strings, sorted by code point.
    mode "bytes": symbols are the byte values (ints 0..255) that occur, sorted.
    """

    def __init__(self, symbols, mode: str = UTF8):
        mode = normalize_encoding(mode)
        if mode == BYTES:
            values = [int(s) for s in symbols]
            if any(not 0 <= v <= 255 for v in values):
                raise CharrnnError(
                    "a bytes vocabulary holds values 0..255; the checkpoint or vocabulary file is corrupt"
                )
            codes = np.array(values, dtype=np.int64)
        else:
            if any(not isinstance(s, str) or len(s) != 1 for s in symbols):
                raise CharrnnError(
                    "a utf-8 vocabulary holds single characters; the checkpoint or vocabulary file is corrupt"
                )
            codes = np.array([ord(s) for s in symbols], dtype=np.int64)
        if codes.size == 0:
            raise CharrnnError("the vocabulary is empty; train on a non-empty corpus")
        if np.any(np.diff(codes) <= 0):
            raise CharrnnError(
                "vocabulary symbols must be sorted and distinct; the checkpoint or vocabulary file is corrupt"
            )
        self.mode = mode
        self._codes = codes  # code point or byte value of each id, ascending
        self._lookup = np.full(int(codes[-1]) + 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(codes.size)
        self.dtype = id_dtype(codes.size)

    @classmethod
    def from_text(cls, text: str | bytes, mode: str = UTF8) -> Vocab:
        """Vocabulary of every symbol occurring in text (str for utf-8; bytes for bytes mode)."""
        mode = normalize_encoding(mode)
        codes = _codes_of(text, mode)
        return cls.from_codes(np.flatnonzero(np.bincount(codes)), mode)

    @classmethod
    def from_codes(cls, codes: np.ndarray, mode: str) -> Vocab:
        """Vocabulary of the given distinct codes (code points, or byte values), ascending."""
        if mode == BYTES:
            return cls([int(c) for c in codes], BYTES)
        return cls([chr(int(c)) for c in codes], UTF8)

    @property
    def symbols(self) -> list:
        """Symbols in id order: one-character strings (utf-8) or ints (bytes)."""
        if self.mode == BYTES:
            return [int(c) for c in self._codes]
        return [chr(int(c)) for c in self._codes]

    def __len__(self) -> int:
        return int(self._codes.size)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.mode == other.mode and np.array_equal(self._codes, other._codes)

    def __repr__(self) -> str:
        return f"Vocab(mode={self.mode!r}, size={len(self)})"

    def unknown(self, text: str | bytes) -> list:
        """Sorted distinct symbols of text that are not in this vocabulary."""
        return self._missing(np.unique(_codes_of(text, self.mode)))

    def _missing(self, codes: np.ndarray) -> list:
        inside = codes < self._lookup.size
        known = np.zeros(codes.size, dtype=bool)
        known[inside] = self._lookup[codes[inside]] >= 0
        missing = codes[~known]
        return [int(c) for c in missing] if self.mode == BYTES else [chr(int(c)) for c in missing]

    def encode(self, text: str | bytes) -> np.ndarray:
        """Ids of text (str, or bytes in bytes mode; a str is UTF-8 encoded there) as a 1-D array.

        Raises CharrnnError naming the symbols that are not in the vocabulary.
        """
        codes = _codes_of(text, self.mode)
        if codes.size == 0:
            return np.zeros(0, dtype=self.dtype)
        ids = self._lookup[codes] if codes.max() < self._lookup.size else None
        if ids is None or ids.min() < 0:
            missing = self._missing(np.unique(codes))
            raise CharrnnError(
                f"text contains symbols the model never saw: {symbol_list(missing)}; "
                "use only symbols from the training corpus"
            )
        return ids.astype(self.dtype)

    def decode_bytes(self, ids) -> bytes:
        """Bytes for ids: the raw bytes (bytes mode) or the UTF-8 encoding of the text."""
        codes = self._codes_of_ids(ids)
        if self.mode == BYTES:
            return codes.astype(np.uint8).tobytes()
        return codes.astype(np.uint32).tobytes().decode("utf-32-le").encode("utf-8")

    def decode(self, ids) -> str:
        """Text for ids; in bytes mode invalid UTF-8 shows as U+FFFD (for display only)."""
        codes = self._codes_of_ids(ids)
        if self.mode == BYTES:
            return codes.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        return codes.astype(np.uint32).tobytes().decode("utf-32-le")

    def _codes_of_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise CharrnnError(f"symbol id out of range 0..{len(self) - 1}; the ids do not belong to this vocabulary")
        return self._codes[ids.astype(np.int64)]

    def labels(self) -> list[str]:
        """Visible label of each symbol in id order (see printable_symbol)."""
        return [printable_symbol(s) for s in self.symbols]

    def printable(self) -> str:
        """All symbols as one line of space-separated visible labels, in id order."""
        return " ".join(self.labels())

    def to_dict(self) -> dict:
        """JSON-able form: {"mode": ..., "symbols": [...]} (strings, or ints for bytes)."""
        return {"mode": self.mode, "symbols": self.symbols}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        """Inverse of to_dict; raises CharrnnError when d is malformed."""
        if not isinstance(d, dict) or "mode" not in d or "symbols" not in d:
            raise CharrnnError("vocabulary record lacks 'mode' or 'symbols'; the checkpoint is corrupt")
        if d["mode"] not in ENCODINGS:
            # normalize_encoding's advice (--encoding) is for the command line, not for a stored record.
            raise CharrnnError(f"vocabulary record has unknown mode {d['mode']!r}; the checkpoint is corrupt")
        if not isinstance(d["symbols"], list):
            raise CharrnnError("vocabulary record's symbols are not a list; the checkpoint is corrupt")
        return cls(d["symbols"], d["mode"])


def _codes_of(text: str | bytes, mode: str) -> np.ndarray:
    """Code points (utf-8 mode) or byte values (bytes mode) of text as an integer array."""
    if mode == BYTES:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass
class Corpus:
    """A loaded corpus: ids (1-D unsigned array), its vocabulary, and where it came from."""

    ids: np.ndarray
    vocab: Vocab
    path: Path
    n_chars: int
    encoding: str
    sha256: str | None = None  # of the source file, where already known (a prepared corpus records it)


def load_corpus(path, encoding: str = UTF8) -> Corpus:
    """Read a corpus file into ids + vocabulary; raise CharrnnError for unusable files.

    In utf-8 mode a leading byte-order mark is dropped (it marks the encoding, it is not text).
    """
    encoding = normalize_encoding(encoding)
    path = Path(path)
    data = _read_corpus_bytes(path)
    if encoding == UTF8:
        refusal = binary_refusal(path, data.count(0), len(data))
        if refusal:
            raise refusal
    if encoding == BYTES or data.isascii():
        # ASCII bytes are their own code points: no decoding, no 4x UTF-32 copy.
        ids, symbols = _index_codes(lambda: _array_chunks(np.frombuffer(data, dtype=np.uint8)))
    else:
        text = _decode_utf8(path, data)
        del data
        if text.startswith(_BOM):
            text = text[1:]
        ids, symbols = _index_codes(lambda: _codepoint_chunks(text))
    check_distinct_symbols(path, symbols, encoding)
    vocab = Vocab.from_codes(symbols, encoding)
    return Corpus(ids=ids, vocab=vocab, path=path, n_chars=int(ids.size), encoding=encoding)


def check_distinct_symbols(path, symbols: np.ndarray, encoding: str) -> None:
    """Refuses a corpus whose distinct codes (sorted) are too few to learn from: none (only a
    byte-order mark) or one."""
    if symbols.size == 0:
        raise CharrnnError(
            f"corpus file {path} holds no text (only a byte-order mark); pass a file with some text in it"
        )
    if symbols.size == 1:
        only = printable_symbol(int(symbols[0]) if encoding == BYTES else chr(int(symbols[0])))
        raise CharrnnError(
            f"{path} contains a single distinct symbol ({only}); a language model needs at least 2 — use a real text file"
        )


def ids_in_vocab(corpus: Corpus, vocab: Vocab, owner: str = "the model") -> np.ndarray:
    """The corpus's ids in `vocab` (a trained model's, which may know more symbols than the corpus
    uses); a symbol of the corpus that `vocab` lacks is a CharrnnError naming it."""
    if corpus.vocab == vocab:
        return corpus.ids
    if corpus.vocab.mode != vocab.mode:
        raise CharrnnError(
            f"{owner} reads {vocab.mode} but {corpus.path} was read as {corpus.vocab.mode}; "
            f"pass --encoding {vocab.mode}"
        )
    symbols = corpus.vocab.symbols
    as_text = bytes(symbols) if vocab.mode == BYTES else "".join(symbols)
    missing = vocab.unknown(as_text)
    if missing:
        raise CharrnnError(
            f"{corpus.path} has symbols {owner} never saw: {symbol_list(missing)}; "
            "remove them from the text or train a model from scratch"
        )
    return vocab.encode(as_text)[corpus.ids]


# --- a user's text against a model's vocabulary (sample --prime, eval FILE, inspect --text) ----


def symbol_list(symbols, counts=None, limit: int = 20) -> str:
    """Symbols for a message: the first `limit` as printable_symbol labels, space-separated, then
    "and N more"; with counts (one per symbol), "a ×3, b ×1, and N more"."""
    labels = [printable_symbol(s) for s in symbols]
    separator = " "
    if counts is not None:
        labels = [f"{label} ×{count}" for label, count in zip(labels, counts)]
        separator = ", "
    shown = separator.join(labels[:limit])
    return shown + (f"{separator}and {len(labels) - limit} more" if len(labels) > limit else "")


def read_text_file(path, mode: str, what: str) -> str | bytes:
    """A user's text file as a vocabulary in `mode` reads it: its bytes (bytes mode), or its UTF-8
    text without a leading byte-order mark. Problems are CharrnnErrors saying "cannot read {what}"."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CharrnnError(f"cannot read {what}: text file {path} does not exist; check the path") from None
    except OSError as error:
        raise CharrnnError(
            f"cannot read {what}: text file {path} cannot be opened "
            f"({error.strerror or error}); check the path and its permissions"
        ) from None
    if normalize_encoding(mode) == BYTES:
        return data
    return _user_utf8(data, f"cannot read {what}: {path}")


def known_text(
    vocab: Vocab,
    text: str | bytes,
    what: str,
    drop_unknown: bool = False,
    notify=None,
    flag: str = "--drop-unknown",
    counted: bool = False,
) -> str | bytes:
    """text as `vocab` reads it (bytes mode: bytes, a str UTF-8 encoded; utf-8 mode: str, bytes
    decoded strictly without a byte-order mark) with no symbol `vocab` lacks.

    Symbols outside the vocabulary are a CharrnnError naming them (what: the text's name in the
    message; flag: the option that drops them), or with drop_unknown are removed and notify(note)
    is told which. counted: list how often each occurs (where the amount of text matters, as for
    a loss); the listing is symbol_list's either way.
    """
    if vocab.mode == BYTES:
        if isinstance(text, str):  # undecodable bytes the terminal passed (surrogates) are bytes again
            text = text.encode("utf-8", "surrogateescape")
        text = bytes(text)
    elif isinstance(text, (bytes, bytearray)):
        text = _user_utf8(bytes(text), what)
    elif not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CharrnnError(
                f"{what} is not valid UTF-8 (the terminal passed bytes that are not UTF-8); "
                "put the text in a UTF-8 file instead"
            ) from None
    unknown = vocab.unknown(text)
    if not unknown:
        return text
    if counted:
        counts = [text.count(bytes([s]) if vocab.mode == BYTES else s) for s in unknown]
        refused = noted = f"{sum(counts)} characters outside the model's vocabulary ({symbol_list(unknown, counts)})"
    else:
        refused = f"{len(unknown)} symbol(s) the model never saw: {symbol_list(unknown)}"
        noted = f"{len(unknown)} unknown symbol(s): {symbol_list(unknown)}"
    if not drop_unknown:
        raise CharrnnError(f"{what} has {refused}; remove them or pass {flag}")
    if vocab.mode == BYTES:
        text = text.translate(None, bytes(unknown))
    else:
        text = text.translate({ord(s): None for s in unknown})
    if notify is not None:
        notify(f"dropped {noted}")
    return text


def _user_utf8(data: bytes, subject: str) -> str:
    """data decoded as UTF-8 without a leading byte-order mark (it marks the encoding, it is not text)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CharrnnError(
            f"{subject} is not valid UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}), "
            "but the model reads UTF-8 characters; convert it to UTF-8"
        ) from None
    return text.removeprefix(_BOM)


def _codepoint_chunks(text: str) -> Iterator[np.ndarray]:
    """Code points of text, a bounded slice at a time."""
    for start in range(0, len(text), _CHUNK):
        yield np.frombuffer(text[start : start + _CHUNK].encode("utf-32-le"), dtype=np.uint32)


def _array_chunks(codes: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, codes.size, _CHUNK):
        yield codes[start : start + _CHUNK]


def _index_codes(make_chunks) -> tuple[np.ndarray, np.ndarray]:
    """Map codes to dense ids in sorted-code order; returns (ids, distinct codes).

    make_chunks() returns a fresh iterator over the codes in chunks; it is called twice
    (count the symbols, then map them) so no whole-corpus temporary is needed.
    """
    counts = np.zeros(0, dtype=np.int64)
    for chunk in make_chunks():
        counts = add_code_counts(counts, chunk)
    symbols, lookup = dense_lookup(counts)
    ids = np.empty(int(counts.sum()), dtype=lookup.dtype)
    start = 0
    for chunk in make_chunks():
        ids[start : start + chunk.size] = lookup[chunk]
        start += chunk.size
    return ids, symbols


def add_code_counts(counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """counts (int64, indexed by code) with the codes of one chunk added; grows as larger codes appear."""
    chunk_counts = np.bincount(codes)
    if chunk_counts.size > counts.size:
        chunk_counts[: counts.size] += counts
        return chunk_counts
    counts[: chunk_counts.size] += chunk_counts
    return counts


def dense_lookup(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct codes ascending, code -> id table in id_dtype) for codes counted by add_code_counts."""
    symbols = np.flatnonzero(counts)
    dtype = id_dtype(max(symbols.size, 1))
    lookup = np.zeros(counts.size, dtype=dtype)
    lookup[symbols] = np.arange(symbols.size, dtype=dtype)
    return symbols, lookup


def _read_corpus_bytes(path: Path) -> bytes:
    if not path.exists():
        raise CharrnnError(f"corpus file {path} does not exist; check the path or get one with `charrnn corpus`")
    if path.is_dir():
        raise CharrnnError(f"{path} is a directory; pass a text file such as {path}/input.txt")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharrnnError(f"cannot read corpus file {path} ({exc.strerror}); check its permissions") from exc
    if not data:
        raise CharrnnError(f"corpus file {path} is empty; pass a file with some text in it")
    return data


def binary_refusal(path, nuls: int, size: int) -> CharrnnError | None:
    """The error for a file of `size` bytes with `nuls` NUL bytes read as UTF-8 text, if it looks binary."""
    if nuls > _MAX_NUL_FRACTION * size:
        return CharrnnError(
            f"{path} looks like a binary or UTF-16 file ({nuls} NUL bytes); "
            "train on raw bytes with --encoding bytes or convert it to UTF-8 text"
        )
    return None


def utf8_refusal(path, byte: int, offset: int) -> CharrnnError:
    """The error for a corpus file that is not UTF-8: `byte` at `offset` (from the file's start) is wrong."""
    return CharrnnError(
        f"{path} is not valid UTF-8 text (byte 0x{byte:02x} at offset {offset}); train on raw bytes with --encoding bytes"
    )


def _decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_refusal(path, data[exc.start], exc.start) from None


def split_corpus(ids: np.ndarray, val_frac: float = 0.1, test_frac: float = 0.0) -> dict[str, np.ndarray]:
    """Contiguous views {"train", "val", "test"}: train first, then val, then test.

    Boundaries are int(n * (1 - val - test)) and int(n * (1 - test)), so val_frac=0.1 gives
    nanoGPT's shakespeare_char split (first 90% train, last 10% val).
    """
    for name, frac in (("validation", val_frac), ("test", test_frac)):
        if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not (math.isfinite(frac) and frac >= 0):
            raise CharrnnError(f"the {name} fraction must be a number >= 0, got {frac!r}")
    if val_frac + test_frac >= 1:
        raise CharrnnError(
            f"validation + test fractions must leave some training text (got {val_frac} + {test_frac} >= 1); lower them"
        )
    n = len(ids)
    train_end = int(n * (1.0 - val_frac - test_frac))
    val_end = n if test_frac == 0 else int(n * (1.0 - test_frac))
    return {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}


class BatchLoader:
    """char-rnn / torch-rnn style minibatches with state carried between consecutive windows.

    The split is cut into B contiguous streams of equal length (inputs) with targets shifted
    by one character; batch k is column window [k*T, (k+1)*T) of every stream, so row b of
    one batch continues row b of the previous batch. A stream tail shorter than T is skipped.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int):
        if batch_size < 1 or seq_length < 1:
            raise CharrnnError("batch size and sequence length must be at least 1")
        needed = batch_size * seq_length + 1
        if len(ids) < needed:
            raise CharrnnError(
                f"the training split has {len(ids)} characters but batch size {batch_size} x sequence length "
                f"{seq_length} needs at least {needed}; use a smaller --batch-size or --seq-length, or a longer corpus"
            )
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.stream_length = (len(ids) - 1) // batch_size
        self.batches_per_epoch = self.stream_length // seq_length
        span = batch_size * self.stream_length
        ids = np.ascontiguousarray(ids)
        # Views, not copies: the corpus stays in its compact dtype until a window is cut.
        self._inputs = ids[:span].reshape(batch_size, self.stream_length)
        self._targets = ids[1 : span + 1].reshape(batch_size, self.stream_length)
        self._mapping = mapping_of(ids)
        self.position = 0
        self.epoch = 0

    @property
    def _epoch_end(self) -> int:
        return self.batches_per_epoch * self.seq_length

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(inputs, targets, reset): int32 (B, T) arrays; reset is True when this window
        starts a new pass over the streams (including the very first batch), so the
        carried hidden state must be zeroed."""
        if self.position + self.seq_length > self._epoch_end:
            self.position = 0
            self.epoch += 1
        reset = self.position == 0
        window = slice(self.position, self.position + self.seq_length)
        inputs = np.ascontiguousarray(self._inputs[:, window], dtype=np.int32)
        targets = np.ascontiguousarray(self._targets[:, window], dtype=np.int32)
        if self._mapping is not None and (self.position // self.seq_length) % RELEASE_EVERY == RELEASE_EVERY - 1:
            release_pages(self._mapping)
        self.position += self.seq_length
        return inputs, targets, reset

    @property
    def epoch_fraction(self) -> float:
        """Epochs completed so far, counting the current one fractionally."""
        return self.epoch + self.position / self._epoch_end

    def state_dict(self) -> dict:
        """{"position", "epoch"}: enough to continue with exactly the next batch after a resume."""
        return {"position": int(self.position), "epoch": int(self.epoch)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict; raises CharrnnError when it does not fit this loader."""
        try:
            position, epoch = int(state["position"]), int(state["epoch"])
        except (KeyError, TypeError, ValueError):
            raise CharrnnError("the checkpoint's data loader state is malformed; start a fresh run") from None
        if not 0 <= position <= self._epoch_end or epoch < 0:
            raise CharrnnError(
                f"the checkpoint's loader position {position} does not fit streams of {self.stream_length} characters; "
                "resume with the same corpus, --batch-size and --seq-length"
            )
        self.position, self.epoch = position, epoch


def eval_stream_count(n_chars: int, batch_size: int) -> int:
    """Number of streams iter_eval_windows uses: batch_size, reduced so each stream has
    at least one character to predict (n_chars >= streams + 1)."""
    return max(1, min(batch_size, n_chars - 1))


def iter_eval_windows(ids: np.ndarray, batch_size: int, seq_length: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (inputs, targets) int32 windows (B, t<=T) covering the whole split, for evaluation
    with state carried from window to window (start from zero state, B = inputs.shape[0]).

    The split becomes B streams of S = (n-1)//B inputs each, targets shifted by one, the last
    window partial. Every character is predicted exactly once except the split's first and its
    last (n-1) mod B (< B) characters. B is reduced when the split is too short for B streams
    (see eval_stream_count).
    """
    n = len(ids)
    if n < 2:
        raise CharrnnError(
            f"the evaluation split has {n} characters but needs at least 2; use a larger validation fraction or a longer corpus"
        )
    if batch_size < 1 or seq_length < 1:
        raise CharrnnError("batch size and sequence length must be at least 1")
    streams = eval_stream_count(n, batch_size)
    stream_length = (n - 1) // streams
    span = streams * stream_length
    ids = np.ascontiguousarray(ids)
    inputs = ids[:span].reshape(streams, stream_length)
    targets = ids[1 : span + 1].reshape(streams, stream_length)
    mapping = mapping_of(ids)
    for number, start in enumerate(range(0, stream_length, seq_length)):
        window = slice(start, start + seq_length)
        batch = (
            np.ascontiguousarray(inputs[:, window], dtype=np.int32),
            np.ascontiguousarray(targets[:, window], dtype=np.int32),
        )
        if mapping is not None and number % RELEASE_EVERY == RELEASE_EVERY - 1:
            release_pages(mapping)
        yield batch
    if mapping is not None:
        release_pages(mapping)


def count_symbols(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id 0..vocab_size-1 occurs in ids (int64), a chunk at a time; a memory-mapped
    corpus lets go of each chunk's pages once counted, so counting it never makes it resident."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    mapping = mapping_of(ids)
    step = 1 << 20  # bincount widens to int64; a chunk this size stays in cache and runs fastest
    for start in range(0, len(ids), step):
        counts += np.bincount(ids[start : start + step], minlength=vocab_size)[:vocab_size]
        if mapping is not None and (start // step) % 8 == 7:  # resident: at most 8 chunks
            release_pages(mapping)
    if mapping is not None:
        release_pages(mapping)
    return counts


def mapping_of(ids) -> mmap.mmap | None:
    """The memory mapping an id array is a view of (a prepared corpus), or None for one in memory."""
    base = ids
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def release_pages(mapping: mmap.mmap) -> None:
    """Drops the pages of a read-only file mapping from this process's resident set: they stay in the
    page cache, and the next read of them maps them again. Where madvise is missing, the OS decides."""
    if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
