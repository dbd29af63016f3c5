"""The training corpus a command names, opened memory-mapped: a prepared directory (charrnn.prepared),
or a text file, which is prepared once into a cache and read from there.

The cache is $CHARRNN_CACHE/corpora, else $XDG_CACHE_HOME/charrnn/corpora, else ~/.cache/charrnn/corpora.
It holds an entry per file and encoding (a prepared corpus named by a hash of the file's resolved path and
the encoding) whose description records the file's size, modification time and sha256. An entry is used
while the file's size and modification time are the recorded ones (the fast path: no reading), or else
while its sha256 is (the new time is then recorded); otherwise the file is prepared again. Processes that
open one file at once (the ranks of an MPI job) take turns through a lock, so it is prepared once.

CHARRNN_CACHE=off reads text files into memory as charrnn always did (charrnn.data.load_corpus), and so
does a cache that cannot be written, with a note. Either way the ids, the vocabulary and so the training
are the same. Entries are never removed by charrnn: delete the directory to get the space back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from charrnn.corpora import file_sha256
from charrnn.data import Corpus, load_corpus, normalize_encoding
from charrnn.errors import CharrnnError
from charrnn.prepared import (
    PROGRESS_FROM_BYTES,
    is_prepared,
    open_prepared,
    prepare_into,
    read_description,
    write_description,
)

try:
    import fcntl
except ImportError:  # not POSIX: concurrent runs on one file may both prepare it (atomically, identically)
    fcntl = None

CACHE_ENV = "CHARRNN_CACHE"
CACHE_OFF = "off"


def cache_root() -> Path | None:
    """Where cached corpora live, or None when CHARRNN_CACHE=off."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return None if configured.strip().lower() == CACHE_OFF else Path(configured) / "corpora"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn" / "corpora"


def corpus_defaults(path) -> dict:
    """What a prepared directory decides unless the command line says otherwise: {"encoding",
    "val_frac", "test_frac"}; {} for a text file (a damaged directory is left for open_corpus to refuse)."""
    if not Path(path).is_dir() or not is_prepared(path):
        return {}
    try:
        description = read_description(path)
    except CharrnnError:
        return {}
    return {key: description[key] for key in ("encoding", "val_frac", "test_frac")}


def open_corpus(path, encoding: str | None = None, note=None) -> Corpus:
    """The corpus at `path`, a prepared directory or a text file, with its sha256 known.

    encoding None takes a prepared directory's; a text file is then read as utf-8. note(message) hears
    about slow first steps (preparing a long file, checking a copied corpus) and about a cache not used.
    """
    path = Path(path)
    wanted = None if encoding is None else normalize_encoding(encoding)
    if path.is_dir():
        corpus = open_prepared(path, note=note)
        if wanted is not None and corpus.encoding != wanted:
            raise CharrnnError(
                f"{path} was prepared as {corpus.encoding} but --encoding {wanted} was asked for; "
                f"drop --encoding, or prepare the text again with --encoding {wanted}"
            )
        return corpus
    return cached_corpus(path, wanted or "utf-8", note)


def cached_corpus(path, encoding: str, note=None) -> Corpus:
    """Text file `path` memory-mapped from its cache entry (prepared first if need be), or read into
    memory when the cache is off or cannot be written."""
    path = Path(path)
    root = cache_root()
    if root is None:
        return _in_memory(path, encoding)
    if not path.is_file():
        return load_corpus(path, encoding)  # its words for a missing file or a directory
    entry = root / hashlib.sha256(f"{path.resolve()}\0{encoding}".encode()).hexdigest()[:24]
    try:
        with _locked(entry):
            corpus = _current_entry(entry, path, encoding, note)
            if corpus is None:
                if note is not None and path.stat().st_size >= PROGRESS_FROM_BYTES:
                    note(f"preparing {path} once into the corpus cache {entry}; later runs map it at once")
                prepare_into(path, entry, encoding)
                corpus = open_prepared(entry, note=note, path=path)
            return corpus
    except OSError as error:
        if note is not None:
            note(
                f"note: cannot use the corpus cache {root} ({error.strerror or error}); reading {path} into "
                f"memory instead (set {CACHE_ENV} to a writable directory, or {CACHE_ENV}=off to skip this)"
            )
        return _in_memory(path, encoding)


def _in_memory(path: Path, encoding: str) -> Corpus:
    corpus = load_corpus(path, encoding)
    corpus.sha256 = file_sha256(path)
    return corpus


def _current_entry(entry: Path, source: Path, encoding: str, note):
    """The entry opened, if it holds this file as it is now (a newer time with the same sha256 is
    recorded); None if it is missing, damaged (prepared again, not refused) or stale."""
    try:
        corpus = open_prepared(entry, note=note, path=source)
    except CharrnnError:
        return None
    description = corpus.description
    recorded, stat = description["source"], source.stat()
    if description["encoding"] != encoding or recorded.get("path") != str(source.resolve()):
        return None
    if recorded.get("size") != stat.st_size:
        return None
    if recorded.get("mtime_ns") == stat.st_mtime_ns:
        return corpus
    if file_sha256(source) != recorded["sha256"]:
        return None
    recorded["mtime_ns"] = stat.st_mtime_ns  # touched, not changed: the fast path applies again next time
    write_description(entry, description)
    return corpus


@contextlib.contextmanager
def _locked(entry: Path):
    entry.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(entry.parent / f"{entry.name}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
