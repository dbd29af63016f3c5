"""Checkpoint files (one .npz: arrays + JSON metadata) and the run directory that holds them.

Checkpoints are untrusted input: they are read member by member with allow_pickle=False,
and every way a file can be wrong becomes a one-line CharrnnError.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import zipfile
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

import numpy as np

from charrnn import __version__
from charrnn.errors import CharrnnError

FORMAT_VERSION = 1

META_KEY = "__meta__"
POINTER_FILES = {"best": "best.json", "latest": "latest.json"}

_NPY_SUFFIX = ".npy"
_CHECKPOINT_NAME = re.compile(r"^ckpt_iter(\d+)(?:_val([^_/]+?))?\.npz$")
# Anything that goes wrong while parsing a damaged archive surfaces as one of these.
_CORRUPTION_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    KeyError,
    ValueError,
    OverflowError,
    MemoryError,
    NotImplementedError,
)


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint file in a run directory, with what its name says about it."""

    path: Path
    iteration: int
    val_loss: float | None


# ----------------------------------------------------------------------------- saving


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write arrays and metadata to `path` atomically; return the path.

    The metadata is stored as JSON, so tuples come back as lists; numpy scalars are converted.
    """
    path = Path(path)
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved for the checkpoint metadata")
    full_meta = dict(meta)
    full_meta["format_version"] = FORMAT_VERSION
    full_meta["charrnn_version"] = __version__
    meta_bytes = json.dumps(full_meta, default=_json_default).encode("utf-8")

    def write(file: BinaryIO) -> None:
        # Uncompressed: checkpoints are mostly float noise, and stored members load fastest.
        with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                _write_member(archive, _escape(name), np.asarray(array))
            _write_member(archive, META_KEY, np.frombuffer(meta_bytes, dtype=np.uint8))

    try:
        atomic_write(path, write)
    except OSError as error:
        raise CharrnnError(
            f"cannot write checkpoint {path}: {error}; check that the directory is writable and the disk is not full"
        ) from error
    return path


def _write_member(archive: zipfile.ZipFile, key: str, array: np.ndarray) -> None:
    if array.dtype.hasobject:
        raise ValueError(f"array {unquote(key)!r} has dtype {array.dtype}: object arrays would need pickle")
    # force_zip64: the member size is unknown until written and may pass 2 GiB.
    with archive.open(key + _NPY_SUFFIX, mode="w", force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint metadata cannot hold a {type(value).__name__}: {value!r}")


def _escape(name: str) -> str:
    # Zip member names treat "/" as a folder and some tools mangle other characters;
    # percent-encoding keeps every name to [A-Za-z0-9_.~-] and "%" and decodes exactly.
    return quote(name, safe="")


def atomic_write(path, write: Callable[[BinaryIO], None], durable: bool = True) -> None:
    """Call write(binary file) on a temp file beside `path`, then rename it to `path`, so `path` is
    always either the old file or the whole new one, never half of it (the directory is created
    if missing). A failure anywhere, write's own exceptions included, removes the temp file and
    propagates; errors of the file system are OSErrors, for the caller to word.

    durable=True also fsyncs the file before the rename and the directory after it, so the new
    file survives a power cut (checkpoints, pointers, logs). durable=False skips both: for files
    that are derived and cheap to make again, or rewritten often (plots, pages), where an fsync
    per write would cost more than losing the newest copy in a crash.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    temp_path, fd = _create_temp_file(directory, path.name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temp_path, path)
        temp_path = None
        if durable:
            _fsync_directory(directory)  # makes the rename itself survive a power cut
    finally:
        if temp_path is not None:
            with suppress(OSError):
                os.unlink(temp_path)


def write_file(path, write: Callable[[BinaryIO], None], durable: bool = True, what: str = "") -> None:
    """atomic_write for a file the user asked for or reads (an export, a sample, a page): a file-system
    error becomes one CharrnnError naming the path. `what` names the kind of file in that message."""
    try:
        atomic_write(path, write, durable)
    except OSError as error:
        raise CharrnnError(
            f"cannot write {what + ' ' if what else ''}{path}: {error.strerror or error}; "
            "check that the directory is writable and the disk is not full"
        ) from None


def _create_temp_file(directory: Path, target_name: str) -> tuple[Path, int]:
    # os.open with mode 0o666 (not mkstemp's 0o600) so the final file gets the user's umask.
    while True:
        candidate = directory / f".{target_name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return candidate, os.open(candidate, flags, 0o666)
        except FileExistsError:
            continue


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms that cannot open directories (Windows) have no directory fsync
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- loading


def load_checkpoint(path, which: str = "best") -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint file, or a run directory's best/latest checkpoint; return (arrays, meta)."""
    path = resolve_checkpoint(path, which)
    arrays: dict[str, np.ndarray] = {}
    meta_array = None
    try:
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise _corrupt(path, "it is not a .npz archive") from error
        with archive:
            for member in archive.namelist():
                if not member.endswith(_NPY_SUFFIX):
                    continue  # foreign extras are ignored, never interpreted
                key = member[: -len(_NPY_SUFFIX)]
                array = _read_member(archive, member, path)
                if key == META_KEY:
                    meta_array = array
                else:
                    arrays[unquote(key, errors="strict")] = array
    except CharrnnError:
        raise
    except _CORRUPTION_ERRORS as error:
        raise _corrupt(path, f"{type(error).__name__}: {error}") from error
    except OSError as error:
        raise CharrnnError(f"cannot read checkpoint {path}: {error}; check the file's permissions") from error
    meta = _decode_meta(meta_array, path)
    _check_format_version(meta, path)
    return arrays, meta


def _read_member(archive: zipfile.ZipFile, member: str, path: Path) -> np.ndarray:
    # Look at the header first so a pickle payload is named as such, not as generic corruption.
    dtype = _member_dtype(archive, member)
    if dtype is not None and dtype.hasobject:
        raise _pickle_refusal(path, member)
    with archive.open(member) as stream:
        try:
            return np.lib.format.read_array(stream, allow_pickle=False)
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise _pickle_refusal(path, member) from error
            raise


def _member_dtype(archive: zipfile.ZipFile, member: str) -> np.dtype | None:
    """The dtype an .npy member declares (headers are parsed with a literal evaluator, never executed)."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)[2]
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream)[2]
    return None  # other versions: read_array itself refuses object dtypes


def _pickle_refusal(path: Path, member: str) -> CharrnnError:
    return CharrnnError(
        f"refused {path}: member {member!r} carries a pickle payload (object array), "
        "which could run arbitrary code; only load checkpoints written by charrnn"
    )


def _corrupt(path: Path, detail: str) -> CharrnnError:
    return CharrnnError(
        f"{path} is not a readable charrnn checkpoint ({detail}); the file may be "
        "truncated or corrupt: pick another checkpoint from the run directory or retrain"
    )


def _decode_meta(meta_array: np.ndarray | None, path: Path) -> dict:
    if meta_array is None:
        raise CharrnnError(
            f"{path} has no charrnn metadata ({META_KEY}); it is not a charrnn checkpoint: "
            "pass a file written by `charrnn train`"
        )
    if meta_array.dtype != np.uint8 or meta_array.ndim != 1:
        raise _bad_meta(path, f"stored as {meta_array.dtype} array of shape {meta_array.shape}")
    try:
        meta = json.loads(meta_array.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise _bad_meta(path, f"not valid JSON: {error}") from error
    if not isinstance(meta, dict):
        raise _bad_meta(path, f"JSON {type(meta).__name__} instead of an object")
    return meta


def _bad_meta(path: Path, detail: str) -> CharrnnError:
    return CharrnnError(
        f"{path} has unreadable metadata ({detail}); the checkpoint is corrupt: pick another checkpoint or retrain"
    )


def _check_format_version(meta: dict, path: Path) -> None:
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool):
        if version > FORMAT_VERSION:
            raise CharrnnError(
                f"{path} uses checkpoint format {version}, newer than the {FORMAT_VERSION} "
                f"this charrnn {__version__} reads; upgrade charrnn to load it"
            )
        if version >= 1:
            return
    raise CharrnnError(
        f"{path} has unknown checkpoint format version {version!r}; "
        f"this charrnn reads format 1 to {FORMAT_VERSION}: pass a file written by `charrnn train`"
    )


# ----------------------------------------------------------------------------- run directories


def checkpoint_name(iteration: int, val_loss: float | None) -> str:
    """File name like char-rnn's, e.g. ckpt_iter002000_val1.4123.npz (no val part without validation)."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    if val_loss is None:
        return f"ckpt_iter{iteration:06d}.npz"
    return f"ckpt_iter{iteration:06d}_val{val_loss:.4f}.npz"


def parse_checkpoint_name(name: str) -> tuple[int, float | None] | None:
    """(iteration, val_loss) from a checkpoint file name, or None if it is not one."""
    match = _CHECKPOINT_NAME.match(name)
    if match is None:
        return None
    iteration_text, val_text = match.groups()
    if val_text is None:
        return int(iteration_text), None
    try:
        return int(iteration_text), float(val_text)
    except ValueError:
        return None


def list_checkpoints(run_dir) -> list[CheckpointEntry]:
    """Checkpoint files in `run_dir` (found by name), sorted by iteration."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CharrnnError(f"run directory {run_dir} does not exist; pass the --out directory of a training run")
    entries = []
    for child in run_dir.iterdir():
        parsed = parse_checkpoint_name(child.name)
        if parsed is not None and child.is_file():
            entries.append(CheckpointEntry(child, *parsed))
    entries.sort(key=lambda entry: (entry.iteration, entry.path.name))
    return entries


def resolve_checkpoint(path, which: str = "best") -> Path:
    """A checkpoint file as-is; for a run directory, its best (lowest val loss) or latest checkpoint."""
    if which not in POINTER_FILES:
        raise CharrnnError(f"unknown checkpoint choice {which!r}; use 'best' or 'latest'")
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CharrnnError(f"checkpoint {path} does not exist; pass a checkpoint file or a run directory")
    if not path.is_dir():
        raise CharrnnError(f"checkpoint {path} is not a regular file or directory; pass a checkpoint file")
    chosen = _read_pointer(path, which) or _scan_for(path, which)
    if chosen is None:
        raise CharrnnError(
            f"{path} contains no checkpoints (ckpt_iter*.npz); "
            "pass a checkpoint file or the --out directory of a training run"
        )
    return chosen


def _pointer_name(run_dir: Path, which: str) -> str | None:
    """The file name a pointer file records, or None if the pointer is missing or malformed."""
    try:
        pointer = json.loads((run_dir / POINTER_FILES[which]).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    name = pointer.get("file") if isinstance(pointer, dict) else None
    # Pointers are untrusted too: only a bare name inside the run directory is accepted.
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        return None
    return name


def _read_pointer(run_dir: Path, which: str) -> Path | None:
    """The checkpoint a pointer file names, or None if the pointer is missing, malformed or stale."""
    name = _pointer_name(run_dir, which)
    target = None if name is None else run_dir / name
    return target if target is not None and target.is_file() else None


def stale_pointer(run_dir, which: str) -> str | None:
    """The name best.json/latest.json records if that file is gone (resolving then falls back to a scan)."""
    run_dir = Path(run_dir)
    name = _pointer_name(run_dir, which) if run_dir.is_dir() else None
    return name if name is not None and not (run_dir / name).is_file() else None


def _scan_for(run_dir: Path, which: str) -> Path | None:
    entries = list_checkpoints(run_dir)
    if not entries:
        return None
    if which == "best":
        scored = [entry for entry in entries if entry.val_loss is not None and math.isfinite(entry.val_loss)]
        if scored:
            # Ties go to the later iteration: equally good, more trained.
            best = min(scored, key=lambda entry: (entry.val_loss, -entry.iteration))
            return best.path
    return entries[-1].path


def update_pointers(run_dir, ckpt_path, val_loss: float | None, is_best: bool) -> None:
    """Point latest.json (and best.json if `is_best`) at `ckpt_path`, a file inside `run_dir`."""
    run_dir = Path(run_dir)
    ckpt_path = Path(ckpt_path)
    if ckpt_path.parent.resolve() != run_dir.resolve():
        raise ValueError(f"checkpoint {ckpt_path} is not inside run directory {run_dir}")
    parsed = parse_checkpoint_name(ckpt_path.name)
    record = {
        "file": ckpt_path.name,
        "iteration": parsed[0] if parsed else None,
        "val_loss": None if val_loss is None or not math.isfinite(val_loss) else float(val_loss),
    }
    text = (json.dumps(record, indent=2) + "\n").encode("utf-8")
    targets = ["latest", "best"] if is_best else ["latest"]
    try:
        for which in targets:
            atomic_write(run_dir / POINTER_FILES[which], lambda file: file.write(text))
    except OSError as error:
        raise CharrnnError(
            f"cannot update checkpoint pointers in {run_dir}: {error}; "
            "check that the directory is writable and the disk is not full"
        ) from error


def prune_checkpoints(run_dir, keep_last: int) -> list[Path]:
    """Delete all but the last `keep_last` checkpoints by iteration, always keeping best and latest.

    Returns the deleted paths.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    run_dir = Path(run_dir)
    entries = list_checkpoints(run_dir)
    keep = {entry.path.name for entry in entries[-keep_last:]} if keep_last else set()
    for which in POINTER_FILES:
        protected = _read_pointer(run_dir, which) or _scan_for(run_dir, which)
        if protected is not None:
            keep.add(protected.name)
    deleted = []
    for entry in entries:
        if entry.path.name not in keep:
            with suppress(FileNotFoundError):
                entry.path.unlink()
                deleted.append(entry.path)
    return deleted
