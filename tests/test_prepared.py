import json
import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn import prepared
from charrnn.corpora import file_sha256
from charrnn.data import BatchLoader, count_symbols, iter_eval_windows, load_corpus, mapping_of
from charrnn.errors import CharrnnError
from charrnn.prepared import DESCRIPTION_FILE, IDS_FILE, open_prepared, prepare_corpus
from tests.cli_runner import run_main

TEXT = "Second Speaker:\r\nBefore we go on, hear me out.\n\tÉtude — naïve café ✓ 🎭\n"


def write(tmp_path, content, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def prepared_and_loaded(tmp_path, content, encoding="utf-8"):
    source = write(tmp_path, content)
    corpus = open_prepared(prepare_corpus(source, tmp_path / "prep", encoding, progress=False))
    return corpus, load_corpus(source, encoding)


# --- the ids are load_corpus's ---------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 1 << 20])
@pytest.mark.parametrize(
    "content",
    [TEXT * 5, "\ufeff" + TEXT, "plain ascii only\n" * 40, "ascii first " * 3 + "ü" + " then ascii" * 3],
    ids=["utf8", "bom", "ascii", "mixed"],
)
def test_ids_and_vocabulary_equal_load_corpus_at_any_chunk_size(tmp_path, monkeypatch, chunk, content):
    monkeypatch.setattr(prepared, "CHUNK_BYTES", chunk)  # sequences and the BOM cut by chunk boundaries
    corpus, loaded = prepared_and_loaded(tmp_path, content)
    assert corpus.vocab == loaded.vocab and corpus.n_chars == loaded.n_chars
    assert np.array_equal(corpus.ids, loaded.ids) and corpus.ids.dtype == loaded.ids.dtype
    assert corpus.vocab.decode(corpus.ids) == content.removeprefix("\ufeff")


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_bytes_mode_keeps_every_byte(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(prepared, "CHUNK_BYTES", chunk)
    raw = b"\xef\xbb\xbf" + bytes(range(256)) * 3 + b"\xff\x00"
    corpus, loaded = prepared_and_loaded(tmp_path, raw, "bytes")
    assert corpus.vocab == loaded.vocab and np.array_equal(corpus.ids, loaded.ids)
    assert corpus.vocab.decode_bytes(corpus.ids) == raw


def test_wide_vocabularies_are_uint16_little_endian_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "CHUNK_BYTES", 100)
    text = "".join(chr(0x4E00 + i) for i in range(300)) + "ab" * 50
    corpus, loaded = prepared_and_loaded(tmp_path, text)
    assert corpus.description["id_dtype"] == "uint16" and np.array_equal(corpus.ids, loaded.ids)
    raw = np.fromfile(tmp_path / "prep" / IDS_FILE, dtype="<u2")
    assert np.array_equal(raw, loaded.ids)


def test_description_records_source_vocabulary_and_ids(tmp_path):
    source = write(tmp_path, TEXT * 4)
    out = prepare_corpus(source, tmp_path / "p", val_frac=0.2, test_frac=0.05, progress=False)
    description = json.loads((out / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    loaded = load_corpus(source)
    assert description["format"] == "charrnn-prepared-corpus" and description["format_version"] == 1
    assert description["vocab"] == loaded.vocab.to_dict() and description["encoding"] == "utf-8"
    assert description["n_chars"] == loaded.n_chars and description["id_dtype"] == "uint8"
    assert description["source"]["sha256"] == file_sha256(source)
    assert description["source"]["size"] == source.stat().st_size
    assert description["ids"]["sha256"] == file_sha256(out / IDS_FILE)
    assert (description["val_frac"], description["test_frac"]) == (0.2, 0.05)
    corpus = open_prepared(out)
    assert corpus.sha256 == file_sha256(source) and (corpus.val_frac, corpus.test_frac) == (0.2, 0.05)
    assert not corpus.ids.flags.writeable and mapping_of(corpus.ids) is not None


def test_default_directory_is_beside_the_file(tmp_path):
    source = write(tmp_path, TEXT)
    assert prepare_corpus(source, progress=False) == tmp_path / "corpus.txt.prepared"
    assert open_prepared(tmp_path / "corpus.txt.prepared").n_chars == len(TEXT)


# --- the same refusals as load_corpus ------------------------------------------------------------


@pytest.mark.parametrize(
    "content, encoding",
    [
        (b"", "utf-8"),
        (b"\xef\xbb\xbf", "utf-8"),
        (b"aaaa", "utf-8"),
        (b"a\x00b\x00c\x00\xff", "utf-8"),  # binary, and not UTF-8 either: the binary message wins
        (b"abc\xff" + b"d" * 20, "utf-8"),
        (b"abc" * 7 + b"\xc3", "utf-8"),  # a sequence the file's end cuts
        (b"ab" + b"\xe2\x82" + b"cd" * 9, "utf-8"),  # a sequence that never completes, across chunks
        (b"\x07\x07", "bytes"),
    ],
)
def test_unusable_files_are_refused_in_load_corpus_words(tmp_path, monkeypatch, content, encoding):
    monkeypatch.setattr(prepared, "CHUNK_BYTES", 3)
    source = write(tmp_path, content)
    with pytest.raises(CharrnnError) as expected:
        load_corpus(source, encoding)
    with pytest.raises(CharrnnError) as refused:
        prepare_corpus(source, tmp_path / "p", encoding, progress=False)
    assert str(refused.value) == str(expected.value)
    assert not (tmp_path / "p").exists()


def test_missing_files_directories_and_fractions(tmp_path):
    with pytest.raises(CharrnnError, match="does not exist"):
        prepare_corpus(tmp_path / "none.txt", progress=False)
    with pytest.raises(CharrnnError, match="is a directory"):
        prepare_corpus(tmp_path, progress=False)
    with pytest.raises(CharrnnError, match="fractions must leave some training text"):
        prepare_corpus(write(tmp_path, TEXT), val_frac=0.6, test_frac=0.5, progress=False)


# --- writing is atomic ---------------------------------------------------------------------------


def test_a_failure_while_writing_leaves_no_half_corpus(tmp_path, monkeypatch):
    source = write(tmp_path, TEXT * 50)
    out = prepare_corpus(source, tmp_path / "p", progress=False)
    old_ids = (out / IDS_FILE).read_bytes()
    write(tmp_path, TEXT * 60)
    monkeypatch.setattr(prepared, "CHUNK_BYTES", 64)
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return original(*args)

    original = prepared._ids_of
    monkeypatch.setattr(prepared, "_ids_of", failing)
    with pytest.raises(CharrnnError, match="cannot write the prepared corpus .*No space left"):
        prepare_corpus(source, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [IDS_FILE]  # no temp file; the description removed
    assert (out / IDS_FILE).read_bytes() == old_ids
    with pytest.raises(CharrnnError, match="is a directory but not a prepared corpus .*charrnn prepare FILE --out"):
        open_prepared(out)


# --- opening checks the ids against their description -----------------------------------------------


@pytest.fixture
def prepared_dir(tmp_path):
    return prepare_corpus(write(tmp_path, TEXT * 20), tmp_path / "p", progress=False)


def edit_description(directory, change):
    path = directory / DESCRIPTION_FILE
    description = json.loads(path.read_text(encoding="utf-8"))
    change(description)
    path.write_text(json.dumps(description), encoding="utf-8")


def test_truncated_ids_are_refused(prepared_dir):
    ids = prepared_dir / IDS_FILE
    ids.write_bytes(ids.read_bytes()[:-1])
    with pytest.raises(
        CharrnnError, match="ids.bin holds .* bytes but its description says .*prepare the corpus again"
    ):
        open_prepared(prepared_dir)


def test_changed_ids_are_found_by_their_checksum(prepared_dir):
    ids = prepared_dir / IDS_FILE
    data = bytearray(ids.read_bytes())
    data[5] = (data[5] + 1) % 10
    ids.write_bytes(bytes(data))  # same size, new modification time: the fast path does not apply
    with pytest.raises(CharrnnError, match="does not match its description .*sha256 differs"):
        open_prepared(prepared_dir)
    with pytest.raises(CharrnnError, match="sha256 differs"):
        open_prepared(prepared_dir, verify=True)


def test_a_copied_corpus_is_checked_once_and_opens(prepared_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (IDS_FILE, DESCRIPTION_FILE):
        (copy / name).write_bytes((prepared_dir / name).read_bytes())
    assert np.array_equal(open_prepared(copy).ids, open_prepared(prepared_dir).ids)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["vocab"]["symbols"].pop(), "was edited after the corpus was prepared"),
        (lambda d: d.update(n_chars=d["n_chars"] + 1), "was edited after"),
        (lambda d: d["ids"].update(sha256="0" * 64), "was edited after"),
        (lambda d: d.update(format_version=99), "format version 99, which this charrnn"),
        (lambda d: d.update(format="something"), "not a charrnn prepared corpus"),
        (lambda d: d.pop("source"), "lacks a valid 'source'"),
        (lambda d: d["ids"].pop("sha256"), "lacks a valid 'ids.sha256'"),
        (lambda d: d.update(val_frac=0.99, test_frac=0.5), "unusable split fractions"),
    ],
)
def test_a_description_that_does_not_fit_is_refused(prepared_dir, change, message):
    edit_description(prepared_dir, change)
    with pytest.raises(CharrnnError, match=message):
        open_prepared(prepared_dir, verify=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["vocab"]["symbols"].reverse(), "unusable vocabulary"),
        (lambda d: d.update(n_chars=d["n_chars"] + 1), "does not add up"),
        (lambda d: d.update(encoding="bytes"), "says encoding 'bytes' but its vocabulary is utf-8"),
        (lambda d: d.update(id_dtype="uint16"), "says its ids are uint16"),
    ],
)
def test_a_resealed_description_that_does_not_fit_is_refused(prepared_dir, change, message):
    """Even where someone edits the description and its seal, what cannot fit the ids is refused."""
    edit_description(prepared_dir, lambda d: (change(d), d.update(seal=prepared.seal(d))))
    with pytest.raises(CharrnnError, match=message):
        open_prepared(prepared_dir)


def test_ids_past_the_vocabulary_are_refused(prepared_dir):
    ids = prepared_dir / IDS_FILE
    data = bytearray(ids.read_bytes())
    data[3] = 250
    ids.write_bytes(bytes(data))
    edit_description(
        prepared_dir, lambda d: (d["ids"].update(sha256=file_sha256(ids)), d.update(seal=prepared.seal(d)))
    )
    with pytest.raises(CharrnnError, match="holds id 250, past its vocabulary"):
        open_prepared(prepared_dir)


def test_missing_pieces_are_refused(prepared_dir, tmp_path):
    with pytest.raises(CharrnnError, match="is not a directory; pass a prepared corpus directory or a text file"):
        open_prepared(tmp_path / "not-there")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharrnnError, match="is a directory but not a prepared corpus .*charrnn prepare FILE --out"):
        open_prepared(tmp_path / "empty")
    (prepared_dir / DESCRIPTION_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(CharrnnError, match="cannot be read as a prepared corpus description"):
        open_prepared(prepared_dir)
    prepare_corpus(write(tmp_path, TEXT), prepared_dir, progress=False)
    (prepared_dir / IDS_FILE).unlink()
    with pytest.raises(CharrnnError, match="has a description but no ids.bin"):
        open_prepared(prepared_dir)


# --- memory: streaming preparation, and loaders that let go of what they read ----------------------

_PEAK_RSS_CHILD = r"""
import resource, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from charrnn.prepared import prepare_corpus, open_prepared
from charrnn.data import BatchLoader, count_symbols, iter_eval_windows
source, out, what = sys.argv[2], sys.argv[3], sys.argv[4]
if what == "prepare":
    prepare_corpus(source, out, progress=False)
else:
    corpus = open_prepared(out)
    count_symbols(corpus.ids, len(corpus.vocab))
    loader = BatchLoader(corpus.ids, 16, 2000)
    for _ in range(loader.batches_per_epoch):
        loader.next_batch()
    for _ in iter_eval_windows(corpus.ids, 16, 2000):
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kb(tmp_path, size, what):
    source = tmp_path / f"big{size}.txt"
    if not source.exists():
        line = (TEXT * 40).encode("utf-8")
        with open(source, "wb") as file:
            for _ in range(size // len(line)):
                file.write(line)
    out = tmp_path / f"big{size}.prepared"
    root = os.path.dirname(os.path.dirname(os.path.abspath(prepared.__file__)))
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_CHILD, root, str(source), str(out), what],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[-1])


def test_memory_does_not_grow_with_the_corpus(tmp_path):
    small, large = 4 << 20, 48 << 20
    prepare_growth = peak_rss_kb(tmp_path, large, "prepare") - peak_rss_kb(tmp_path, small, "prepare")
    read_growth = peak_rss_kb(tmp_path, large, "read") - peak_rss_kb(tmp_path, small, "read")
    # 44 MB more text: a whole-text string or id array would add 44-176 MB; chunks add nothing.
    assert prepare_growth < 12_000, prepare_growth
    assert read_growth < 12_000, read_growth


def test_loaders_read_the_mapped_ids_as_they_read_arrays(prepared_dir):
    corpus = open_prepared(prepared_dir)
    in_memory = np.array(corpus.ids)
    mapped, plain = BatchLoader(corpus.ids, 3, 7), BatchLoader(in_memory, 3, 7)
    for _ in range(2 * mapped.batches_per_epoch + 3):
        for a, b in zip(mapped.next_batch(), plain.next_batch()):
            assert np.array_equal(a, b)
    for a, b in zip(iter_eval_windows(corpus.ids, 4, 9), iter_eval_windows(in_memory, 4, 9)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(
        count_symbols(corpus.ids, len(corpus.vocab)), np.bincount(in_memory, minlength=len(corpus.vocab))
    )


# --- the command ---------------------------------------------------------------------------------------


def test_prepare_command_reports_and_shows_progress_on_long_files(tmp_path, capsys, monkeypatch):
    source = write(tmp_path, TEXT * 30)
    monkeypatch.setattr(prepared, "PROGRESS_FROM_BYTES", 0)
    code, out, err = run_main(capsys, "prepare", source, "--out", tmp_path / "p", "--encoding", "bytes")
    assert code == 0, err
    assert f"{len((TEXT * 30).encode()):,} uint8 ids of" in out and "MB/s" in out
    assert "reading corpus.txt" in err and "writing the ids of corpus.txt" in err
    assert open_prepared(tmp_path / "p").encoding == "bytes"


def test_prepare_command_errors_are_one_line(tmp_path, capsys):
    code, out, err = run_main(capsys, "prepare", write(tmp_path, b"\x00\x00\x00x"))
    assert code == 1 and err.startswith("charrnn: error: ") and err.count("\n") == 1 and "binary" in err
