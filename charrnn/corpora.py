"""Getting training corpora at run time: verified downloads and an offline corpus built locally.

No corpus text is shipped with the project. "tinyshakespeare" is downloaded and checked
against a pinned sha256; "python-stdlib" is assembled from the .py files of the running
Python's standard library, so there is always a corpus even without a network.

A data directory named by the environment variable CHARRNN_DATA (laid out like data/:
<name>/input.txt) stands in for the network: a corpus there with the pinned checksum is
copied instead of downloaded, and `charrnn corpus default` uses its Tiny Shakespeare.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click

from charrnn.checkpoint import atomic_write
from charrnn.errors import CharrnnError

CORPUS_FILENAME = "input.txt"
DATA_ENV = "CHARRNN_DATA"  # a data directory holding <name>/input.txt, e.g. a machine's shared copy
STDLIB_CORPUS = "python-stdlib"
DEFAULT_STDLIB_BYTES = 5_000_000
_DOWNLOAD_TIMEOUT_S = 30
_READ_BLOCK = 1 << 16
# Directories of the standard library that are not library source: test suites (which also
# hold deliberately mis-encoded files) and third-party packages.
_STDLIB_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class CorpusSpec:
    """A known corpus: downloaded from url (checked by sha256), or built locally when url is None."""

    name: str
    description: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None


CORPORA: dict[str, CorpusSpec] = {
    "tinyshakespeare": CorpusSpec(
        name="tinyshakespeare",
        description="Karpathy's Tiny Shakespeare, ~1.1 MB of plays (download)",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
    ),
    STDLIB_CORPUS: CorpusSpec(
        name=STDLIB_CORPUS,
        description="Python standard library source, ~5 MB, built offline from this machine's Python",
    ),
}


def corpus_path(name: str, dest_dir="data") -> Path:
    """Where corpus `name` lives under dest_dir: dest_dir/<name>/input.txt."""
    return Path(dest_dir) / _spec(name).name / CORPUS_FILENAME


def fetch_corpus(name: str, dest_dir="data", url: str | None = None, progress: bool = True) -> Path:
    """Make corpus `name` available under dest_dir and return its path.

    Downloaded corpora are verified by sha256; a file already there with the right checksum
    is reused without touching the network, and so is one with the right checksum in the
    CHARRNN_DATA directory (copied to dest_dir). `url` replaces the registry's address
    (mirrors, tests). "python-stdlib" is built locally (reused if already built).
    Raises CharrnnError on network failure or checksum mismatch; nothing partial is left behind.
    """
    spec = _spec(name)
    dest = corpus_path(name, dest_dir)
    if spec.url is None:
        if _usable(dest):
            return dest
        return build_stdlib_corpus(dest)
    if dest.is_file() and file_sha256(dest) == spec.sha256:
        return dest
    local = env_corpus_path(name)
    if local is not None and file_sha256(local) == spec.sha256:
        return _copy(local, dest)
    download(url or spec.url, dest, spec.sha256, label=spec.name, progress=progress)
    return dest


def env_corpus_path(name: str) -> Path | None:
    """CHARRNN_DATA/<name>/input.txt when the variable is set and that file is there (non-empty)."""
    data_dir = os.environ.get(DATA_ENV)
    if not data_dir:
        return None
    candidate = corpus_path(name, data_dir)
    return candidate if _usable(candidate) else None


def download(url: str, dest, sha256: str | None, label: str = "", progress: bool = True) -> Path:
    """Download url to dest atomically (temp file in the same directory, then rename),
    checking sha256 when given. Raises CharrnnError; never leaves a partial file."""
    dest = Path(dest)
    label = label or dest.name
    manual = "download it yourself and pass the file's path instead"

    def write(out):
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                total = _content_length(response)
                with Progress(label, total, enabled=progress) as bar:
                    while block := response.read(_READ_BLOCK):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as exc:
            raise CharrnnError(
                f"could not download {label}: {url} answered HTTP {exc.code} {exc.reason}; {manual}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: malformed URL
            reason = getattr(exc, "reason", None) or exc
            raise CharrnnError(f"could not download {label} from {url} ({reason}); {manual}") from None
        if sha256 is not None and digest.hexdigest() != sha256:
            raise CharrnnError(
                f"{label} downloaded from {url} has sha256 {digest.hexdigest()}, expected {sha256} "
                f"(corrupted or changed upstream); discarded it — {manual}"
            )

    _write_corpus(dest, write)
    return dest


def _copy(source: Path, dest: Path) -> Path:
    """source copied to dest atomically."""

    def write(out):
        with open(source, "rb") as file:
            shutil.copyfileobj(file, out, _READ_BLOCK)

    _write_corpus(dest, write)
    return dest


def _write_corpus(dest: Path, write) -> None:
    # Durable: a corpus is reused later on the strength of being there (python-stdlib is not
    # even checksummed), so a crash must not leave a torn one behind.
    try:
        atomic_write(dest, write)
    except OSError as exc:
        raise CharrnnError(f"cannot write {dest} ({exc.strerror or exc}); choose a writable directory") from None


def build_stdlib_corpus(dest, max_bytes: int = DEFAULT_STDLIB_BYTES, stdlib_dir=None) -> Path:
    """Write the standard library's .py files (sorted, tests and site-packages skipped) to dest
    as one UTF-8 text of at most max_bytes, each file preceded by "# file: relative/path.py".

    The file that crosses the cap is cut at its last complete line. stdlib_dir defaults to
    the running Python's (sysconfig "stdlib"). Written atomically; returns dest.
    """
    if max_bytes < 1:
        raise CharrnnError(f"the corpus size cap must be positive, got {max_bytes}")
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise CharrnnError(f"Python standard library not found at {root}; pass a text file to train on instead")
    pieces, size = [], 0
    for source in _stdlib_sources(root):
        try:
            text = source.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.endswith("\n"):
            text += "\n"
        piece = f"# file: {source.relative_to(root).as_posix()}\n{text}".encode()
        room = max_bytes - size
        if len(piece) > room:
            # Cut at a newline: 0x0a never occurs inside a multi-byte UTF-8 sequence.
            cut = piece.rfind(b"\n", 0, room)
            if cut >= 0:
                pieces.append(piece[: cut + 1])
            break
        pieces.append(piece)
        size += len(piece)
    if not pieces:
        raise CharrnnError(f"no readable .py files found under {root} within {max_bytes} bytes; raise the size cap")
    dest = Path(dest)
    _write_corpus(dest, lambda out: out.writelines(pieces))
    return dest


def default_corpus_path(base_dir=None) -> Path:
    """The corpus for the README's main run; base_dir (default: cwd) is the project's directory.

    Tiny Shakespeare from the CHARRNN_DATA directory (CHARRNN_DATA/tinyshakespeare/input.txt),
    else from base_dir/data/tinyshakespeare/input.txt (where `charrnn corpus tinyshakespeare`
    puts it); otherwise the offline python-stdlib corpus in base_dir/data (built if missing).
    Never uses the network.
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    for candidate in (env_corpus_path("tinyshakespeare"), corpus_path("tinyshakespeare", base / "data")):
        if candidate is not None and _usable(candidate):
            return candidate
    return fetch_corpus(STDLIB_CORPUS, base / "data", progress=False)


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _spec(name: str) -> CorpusSpec:
    if name not in CORPORA:
        raise CharrnnError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def _usable(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _stdlib_sources(root: Path) -> list[Path]:
    sources = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP_DIRS]  # prune: site-packages can be huge
        sources.extend(Path(folder) / f for f in files if f.endswith(".py"))
    return sorted(sources, key=lambda p: p.relative_to(root).as_posix())


def _content_length(response) -> int | None:
    try:
        return int(response.headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


class Progress:
    """click progress bar on a terminal; otherwise a line per 10% (or one at the end) on stderr.
    `action` names the work ("downloading", "preparing"); the total and counts are bytes."""

    def __init__(self, label: str, total: int | None, enabled: bool, action: str = "downloading"):
        self.label, self.total, self.enabled, self.action = label, total, enabled, action
        self.done = 0
        self._next_pct = 10
        self._bar = None
        if enabled and total and sys.stderr.isatty():
            self._bar = click.progressbar(length=total, label=f"{action} {label}", file=sys.stderr)

    def __enter__(self):
        if self._bar is not None:
            self._bar.__enter__()
        elif self.enabled:
            click.echo(f"{self.action} {self.label} ...", err=True)
        return self

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and self.total:
            pct = 100 * self.done // self.total
            if pct >= self._next_pct:
                click.echo(f"  {pct}% ({self.done:,} of {self.total:,} bytes)", err=True)
                self._next_pct = pct // 10 * 10 + 10

    def __exit__(self, *exc_info):
        if self._bar is not None:
            return self._bar.__exit__(*exc_info)
        if self.enabled and exc_info[0] is None and not self.total:
            click.echo(f"  {self.done:,} bytes", err=True)
        return False
