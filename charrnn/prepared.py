"""Prepared corpora: a text file's symbol ids on disk as one raw little-endian array beside a JSON
description, read memory-mapped, so a corpus of any size costs nothing to open and training touches
only the windows it reads (the loaders in charrnn.data release the pages they have read).

    DIR/ids.bin       the ids, no header: n_chars of them as uint8, uint16 or uint32 little-endian, the
                      smallest that holds the vocabulary (charrnn.data.id_dtype), so any tool reads it
                      with np.memmap(DIR / "ids.bin", dtype="<u2") and the description's id_dtype
    DIR/corpus.json   what the ids are: format and version, the vocabulary (charrnn.data.Vocab.to_dict),
                      encoding, id dtype, n_chars, the ids file's size, sha256 and modification time, the
                      source file's path, size, modification time and sha256, and the split fractions
                      training takes unless told otherwise

nanoGPT's prepare.py and its memory-mapped train.bin are the model; its meta file is a pickle, ours is
JSON, and its train/val files are one file here, split by fractions at run time as charrnn.data does.

prepare_corpus reads the source in chunks, twice: the first pass hashes it, counts its NUL bytes and its
symbols (so the vocabulary, and with it the dense ids and their dtype, is known), the second maps each
chunk to ids and writes them. A chunk at a time, never the whole text: UTF-8 sequences a chunk boundary
cuts are joined by an incremental decoder. The ids are those charrnn.data.load_corpus gives the same
file, and its refusals (binary files, invalid UTF-8, too few symbols) are the same words.

open_prepared checks the description against the ids: their size and the description's seal (a sha256
of what says how to read the ids: vocabulary, encoding, n_chars, dtype, the ids' sha256) always, and the
ids' sha256 and largest id whenever the ids file's modification time is not the one recorded (it was
copied, or changed), so a damaged or edited corpus is refused in one line instead of training on wrong ids.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn import __version__
from charrnn.checkpoint import atomic_write
from charrnn.corpora import Progress
from charrnn.data import (
    BYTES,
    UTF8,
    Corpus,
    Vocab,
    add_code_counts,
    binary_refusal,
    check_distinct_symbols,
    dense_lookup,
    id_dtype,
    normalize_encoding,
    split_corpus,
    utf8_refusal,
)
from charrnn.errors import CharrnnError

FORMAT = "charrnn-prepared-corpus"
FORMAT_VERSION = 1
IDS_FILE = "ids.bin"
DESCRIPTION_FILE = "corpus.json"
# 1 MiB: bincount widens its input to int64, and at this size the temporary stays in cache (the fastest
# size measured); every buffer of a pass is a small multiple of it, so memory does not grow with the file.
CHUNK_BYTES = 1 << 20
PROGRESS_FROM_BYTES = 32 << 20  # smaller files prepare in well under a second: no progress lines


@dataclass
class PreparedCorpus(Corpus):
    """A prepared corpus opened memory-mapped: `ids` is a read-only view of DIR/ids.bin."""

    directory: Path | None = None
    description: dict = field(default_factory=dict)

    @property
    def val_frac(self) -> float:
        return float(self.description["val_frac"])

    @property
    def test_frac(self) -> float:
        return float(self.description["test_frac"])


def default_out_dir(source) -> Path:
    """Where `charrnn prepare FILE` writes without --out: FILE.prepared beside it."""
    source = Path(source)
    return source.with_name(source.name + ".prepared")


# ----------------------------------------------------------------------------- preparing


class _NotUtf8(Exception):
    def __init__(self, byte: int, offset: int):
        super().__init__(byte, offset)
        self.byte, self.offset = byte, offset


class _CodeReader:
    """The symbol codes of a file, one raw chunk after another: byte values (bytes mode, and ASCII
    chunks, which are their own code points) or code points (uint32). In utf-8 mode a sequence cut by
    a chunk boundary is completed by the next chunk and a leading byte-order mark is dropped."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._fed = 0  # bytes given to the decoder so far
        self._at_start = True  # no symbol produced yet: a byte-order mark here is not text

    def codes(self, raw: bytes, final: bool = False) -> np.ndarray:
        if self.encoding == BYTES:
            return np.frombuffer(raw, dtype=np.uint8)
        pending = self._decoder.getstate()[0]
        if not pending and raw.isascii():
            self._fed += len(raw)
            self._at_start = self._at_start and not raw
            return np.frombuffer(raw, dtype=np.uint8)
        try:
            text = self._decoder.decode(raw, final)
        except UnicodeDecodeError as error:
            # The decoder decoded its pending bytes and this chunk as one: offsets count from there.
            joined = pending + raw
            raise _NotUtf8(joined[error.start], self._fed - len(pending) + error.start) from None
        self._fed += len(raw)
        if self._at_start and text:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)

    def finish(self) -> np.ndarray:
        """Codes of what is left at the end of the file (an incomplete sequence is invalid UTF-8)."""
        return self.codes(b"", final=True) if self.encoding == UTF8 else np.zeros(0, dtype=np.uint8)


def _raw_chunks(path: Path, progress: Progress):
    try:
        with open(path, "rb") as file:
            while raw := file.read(CHUNK_BYTES):
                progress.update(len(raw))
                yield raw
    except OSError as error:
        raise CharrnnError(
            f"cannot read corpus file {path} ({error.strerror or error}); check its permissions"
        ) from None


def _source_stat(path: Path) -> os.stat_result:
    """The source file's stat, after load_corpus's checks and words (missing, a directory, empty)."""
    if not path.exists():
        raise CharrnnError(f"corpus file {path} does not exist; check the path or get one with `charrnn corpus`")
    if path.is_dir():
        raise CharrnnError(f"{path} is a directory; pass a text file such as {path}/input.txt")
    stat = path.stat()
    if stat.st_size == 0:
        raise CharrnnError(f"corpus file {path} is empty; pass a file with some text in it")
    return stat


def _count_pass(path: Path, encoding: str, show: bool) -> tuple[np.ndarray, str, int]:
    """(code counts, sha256, size in bytes) of the file; refuses it as load_corpus would."""
    size = path.stat().st_size
    digest, nuls, failure = hashlib.sha256(), 0, None
    counts = np.zeros(0, dtype=np.int64)
    reader = _CodeReader(encoding)
    with Progress(path.name, size, enabled=show, action="reading") as progress:
        for raw in _raw_chunks(path, progress):
            digest.update(raw)
            nuls += raw.count(0)
            if failure is None:  # past a decoding error, go on only to count NULs: a binary file says so
                try:
                    counts = add_code_counts(counts, reader.codes(raw))
                except _NotUtf8 as error:
                    failure = error
    if encoding == UTF8:
        refusal = binary_refusal(path, nuls, size)
        if refusal:
            raise refusal
        if failure is None:
            try:
                counts = add_code_counts(counts, reader.finish())
            except _NotUtf8 as error:
                failure = error
        if failure is not None:
            raise utf8_refusal(path, failure.byte, failure.offset)
    return counts, digest.hexdigest(), size


def _map_pass(path: Path, encoding: str, lookup: np.ndarray, out, show: bool) -> tuple[str, int]:
    """Writes the file's ids (little-endian) to `out`; returns their (sha256, count)."""
    dtype = lookup.dtype.newbyteorder("<")
    lookup = lookup.astype(dtype)
    # A 256-entry byte table maps byte-valued codes to uint8 ids at memcpy-like speed (bytes.translate).
    table = None
    if dtype.itemsize == 1:
        entries = np.zeros(256, dtype=dtype)
        entries[: min(256, lookup.size)] = lookup[:256]
        table = entries.tobytes()
    digest, written = hashlib.sha256(), 0
    reader = _CodeReader(encoding)
    with Progress(path.name, path.stat().st_size, enabled=show, action="writing the ids of") as progress:
        for raw in _raw_chunks(path, progress):
            ids = _ids_of(reader.codes(raw), raw, table, lookup)
            digest.update(ids)
            out.write(ids)
            written += len(ids) // dtype.itemsize
        ids = _ids_of(reader.finish(), b"", None, lookup)
        digest.update(ids)
        out.write(ids)
        written += len(ids) // dtype.itemsize
    return digest.hexdigest(), written


def _ids_of(codes: np.ndarray, raw: bytes, table: bytes | None, lookup: np.ndarray) -> bytes:
    if table is not None and codes.dtype == np.uint8 and codes.size == len(raw):
        return raw.translate(table)  # the codes are the raw bytes themselves
    return lookup[codes].tobytes()


def prepare_corpus(
    source, out=None, encoding: str = UTF8, val_frac: float = 0.1, test_frac: float = 0.0, progress: bool = True
) -> Path:
    """Prepares text file `source` into directory `out` (default: default_out_dir) and returns it.

    Progress lines go to stderr for files from PROGRESS_FROM_BYTES (when `progress`). Both files are
    written atomically, the description last and the old one removed first, so a crash leaves either a
    whole prepared corpus or a directory open_prepared refuses as unprepared.
    """
    out = Path(out) if out is not None else default_out_dir(source)
    try:
        return prepare_into(source, out, encoding, val_frac, test_frac, progress)
    except OSError as error:
        raise CharrnnError(
            f"cannot write the prepared corpus to {out} ({error.strerror or error}); "
            "choose a writable directory with --out and check that the disk is not full"
        ) from None


def prepare_into(source, out, encoding=UTF8, val_frac=0.1, test_frac=0.0, progress=True) -> Path:
    """prepare_corpus, with the file system's errors left as OSErrors for the caller to word."""
    encoding = normalize_encoding(encoding)
    source, out = Path(source), Path(out)
    split_corpus(np.zeros(2), val_frac, test_frac)  # refuses unusable fractions before reading anything
    before = _source_stat(source)
    show = progress and before.st_size >= PROGRESS_FROM_BYTES
    counts, sha256, size = _count_pass(source, encoding, show)
    symbols, lookup = dense_lookup(counts)
    check_distinct_symbols(source, symbols, encoding)
    vocab = Vocab.from_codes(symbols, encoding)
    n_chars = int(counts.sum())  # at least 2: there are 2 distinct symbols
    ids_path, description_path = out / IDS_FILE, out / DESCRIPTION_FILE
    mapped = {}

    def write_ids(file):
        mapped["sha256"], mapped["count"] = _map_pass(source, encoding, lookup, file, show)
        now = source.stat()
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or mapped["count"] != n_chars:
            raise CharrnnError(f"{source} changed while it was being prepared; prepare it again once it is complete")

    if description_path.is_file():
        description_path.unlink()
    atomic_write(ids_path, write_ids)
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "charrnn_version": __version__,
        "encoding": encoding,
        "vocab": vocab.to_dict(),
        "n_chars": n_chars,
        "id_dtype": id_dtype(len(vocab)).name,
        "byte_order": "little",
        "ids": {
            "file": IDS_FILE,
            "bytes": n_chars * id_dtype(len(vocab)).itemsize,
            "sha256": mapped["sha256"],
            "mtime_ns": ids_path.stat().st_mtime_ns,
        },
        "source": {
            "path": str(source.resolve()),
            "size": size,
            "mtime_ns": before.st_mtime_ns,
            "sha256": sha256,
        },
        "val_frac": val_frac,
        "test_frac": test_frac,
    }
    description["seal"] = seal(description)
    write_description(out, description)
    return out


def seal(description: dict) -> str:
    """sha256 of the entries that say how to read the ids, so an edit of any of them is noticed."""
    bound = [description[key] for key in ("vocab", "encoding", "n_chars", "id_dtype")]
    bound.append(description["ids"]["sha256"])
    return hashlib.sha256(json.dumps(bound, sort_keys=True).encode("utf-8")).hexdigest()


def write_description(directory: Path, description: dict) -> None:
    """Writes DIR/corpus.json atomically (OSError for the caller to word)."""
    text = json.dumps(description, indent=1, ensure_ascii=False) + "\n"
    atomic_write(Path(directory) / DESCRIPTION_FILE, lambda file: file.write(text.encode("utf-8")))


# ------------------------------------------------------------------------------- opening


def is_prepared(path) -> bool:
    """Whether path is a directory holding a prepared corpus's description (not yet validated)."""
    return (Path(path) / DESCRIPTION_FILE).is_file()


def read_description(directory) -> dict:
    """DIR/corpus.json, checked for the fields and types open_prepared relies on."""
    directory = Path(directory)
    path = directory / DESCRIPTION_FILE
    if not directory.is_dir():
        raise CharrnnError(f"{directory} is not a directory; pass a prepared corpus directory or a text file")
    if not path.is_file():
        raise CharrnnError(
            f"{directory} is a directory but not a prepared corpus (it has no {DESCRIPTION_FILE}); pass a text "
            f"file, or make one with: charrnn prepare FILE --out {directory}"
        )
    again = f"prepare the corpus again with: charrnn prepare FILE --out {directory}"
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CharrnnError(f"{path} cannot be read as a prepared corpus description ({error}); {again}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise CharrnnError(f"{path} is not a charrnn prepared corpus description; {again}")
    version = description.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharrnnError(
            f"{path} has format version {version!r}, which this charrnn ({__version__}) cannot read; "
            f"upgrade charrnn or {again}"
        )
    expected = {
        "encoding": str,
        "vocab": dict,
        "n_chars": int,
        "id_dtype": str,
        "ids": dict,
        "source": dict,
        "val_frac": (int, float),
        "test_frac": (int, float),
        "seal": str,
    }
    for key, kind in expected.items():
        value = description.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CharrnnError(f"{path} lacks a valid {key!r} entry; {again}")
    for key, kind in (("bytes", int), ("sha256", str), ("mtime_ns", int)):
        if not isinstance(description["ids"].get(key), kind):
            raise CharrnnError(f"{path} lacks a valid 'ids.{key}' entry; {again}")
    if not isinstance(description["source"].get("sha256"), str):
        raise CharrnnError(f"{path} lacks the source file's sha256; {again}")
    if seal(description) != description["seal"]:
        raise CharrnnError(
            f"{path} was edited after the corpus was prepared (its vocabulary, size or checksum no longer "
            f"agree with its seal); {again}"
        )
    return description


def open_prepared(directory, verify: bool | None = None, note=None, path=None) -> PreparedCorpus:
    """The prepared corpus in `directory`, its ids memory-mapped read-only.

    verify: None checks the ids' sha256 when the ids file's modification time is not the recorded one;
    True always; False never. `note(message)` hears about a check that takes a while. `path` is what
    the returned corpus names as its path (default: the directory); a cached text file passes itself.
    """
    directory = Path(directory)
    description = read_description(directory)
    again = f"prepare the corpus again with: charrnn prepare FILE --out {directory}"
    try:
        vocab = Vocab.from_dict(description["vocab"])
    except CharrnnError as error:
        raise CharrnnError(f"{directory / DESCRIPTION_FILE} has an unusable vocabulary ({error}); {again}") from None
    dtype = id_dtype(len(vocab))
    n_chars, ids_record = description["n_chars"], description["ids"]
    if description["encoding"] != vocab.mode:
        raise CharrnnError(
            f"{directory / DESCRIPTION_FILE} says encoding {description['encoding']!r} "
            f"but its vocabulary is {vocab.mode}; {again}"
        )
    if description["id_dtype"] != dtype.name or description.get("byte_order", "little") != "little":
        raise CharrnnError(
            f"{directory / DESCRIPTION_FILE} says its ids are {description['id_dtype']} but a vocabulary of "
            f"{len(vocab)} symbols has {dtype.name} ids; {again}"
        )
    if n_chars < 2 or ids_record["bytes"] != n_chars * dtype.itemsize:
        raise CharrnnError(
            f"{directory / DESCRIPTION_FILE} describes {n_chars} ids in {ids_record['bytes']} bytes, which "
            f"does not add up for {dtype.name} ids; {again}"
        )
    try:
        split_corpus(np.zeros(2), description["val_frac"], description["test_frac"])
    except CharrnnError as error:
        raise CharrnnError(
            f"{directory / DESCRIPTION_FILE} records unusable split fractions ({error}); {again}"
        ) from None
    ids_path = directory / IDS_FILE
    try:
        stat = ids_path.stat()
    except OSError:
        raise CharrnnError(f"{directory} has a description but no {IDS_FILE}; {again}") from None
    if stat.st_size != ids_record["bytes"]:
        raise CharrnnError(
            f"{ids_path} holds {stat.st_size:,} bytes but its description says {ids_record['bytes']:,} "
            f"({n_chars:,} {dtype.name} ids); the ids do not match their description: {again}"
        )
    if verify or (verify is None and stat.st_mtime_ns != ids_record["mtime_ns"]):
        if note is not None and stat.st_size >= PROGRESS_FROM_BYTES:
            note(f"checking {ids_path} against its description (it was copied or changed since it was prepared)")
        digest, largest = _ids_checks(ids_path, dtype)
        if digest != ids_record["sha256"]:
            raise CharrnnError(
                f"{ids_path} does not match its description (its sha256 differs: changed or damaged); {again}"
            )
        if largest >= len(
            vocab
        ):  # only a bug could seal such ids, but the kernels must never index past the vocabulary
            raise CharrnnError(f"{ids_path} holds id {largest}, past its vocabulary of {len(vocab)}; {again}")
    try:
        with open(ids_path, "rb") as file:
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as error:
        raise CharrnnError(f"cannot map {ids_path} into memory ({error}); check the file and its permissions") from None
    ids = np.frombuffer(mapping, dtype=dtype.newbyteorder("<"))
    return PreparedCorpus(
        ids=ids,
        vocab=vocab,
        path=Path(path) if path is not None else directory,
        n_chars=n_chars,
        encoding=vocab.mode,
        sha256=description["source"]["sha256"],
        directory=directory,
        description=description,
    )


def _ids_checks(path: Path, dtype: np.dtype) -> tuple[str, int]:
    """(sha256, largest id) of an ids file, read in chunks (through the file, not a mapping, so the
    pages read never count against this process)."""
    digest, largest = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while block := file.read(CHUNK_BYTES * dtype.itemsize):
            digest.update(block)
            largest = max(largest, int(np.frombuffer(block, dtype=dtype.newbyteorder("<")).max()))
    return digest.hexdigest(), largest
