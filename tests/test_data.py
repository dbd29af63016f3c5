import json

import numpy as np
import pytest

from charrnn import data
from charrnn.data import (
    BatchLoader,
    Vocab,
    eval_stream_count,
    ids_in_vocab,
    iter_eval_windows,
    load_corpus,
    printable_symbol,
    split_corpus,
    symbol_caption,
    terminal_safe,
)
from charrnn.errors import CharrnnError

TEXT = "Second Speaker:\nBefore we go on, hear me out.\n\tÉtude — naïve café ✓\n"


def write(tmp_path, content, name="corpus.txt"):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --- Vocab -------------------------------------------------------------------------------


def test_vocab_utf8_is_sorted_and_round_trips():
    vocab = Vocab.from_text(TEXT)
    assert vocab.symbols == sorted(set(TEXT))
    ids = vocab.encode(TEXT)
    assert ids.dtype == np.uint8 and ids.shape == (len(TEXT),)
    assert vocab.decode(ids) == TEXT
    assert vocab.decode_bytes(ids) == TEXT.encode("utf-8")
    assert len(vocab) == len(set(TEXT))


def test_vocab_bytes_keeps_raw_bytes_and_decodes_for_display():
    raw = b"ab\xff\x00c\xc3\xa9"
    vocab = Vocab.from_text(raw, "bytes")
    assert vocab.symbols == sorted(set(raw))
    ids = vocab.encode(raw)
    assert vocab.decode_bytes(ids) == raw
    assert vocab.decode(ids) == "ab\ufffd\x00cé"
    assert vocab.encode("é").tolist() == vocab.encode(b"\xc3\xa9").tolist()


def test_encode_rejects_unknown_symbols_and_unknown_lists_them():
    vocab = Vocab.from_text("abc")
    assert vocab.unknown("cab!zé!") == ["!", "z", "é"]
    assert vocab.unknown("") == []
    with pytest.raises(CharrnnError, match=r"never saw: ! z é"):
        vocab.encode("cab!zé")
    assert vocab.encode("").size == 0


def test_id_dtype_grows_with_vocabulary():
    assert Vocab.from_text("".join(chr(0x100 + i) for i in range(300))).dtype == np.uint16
    # More than 65536 distinct characters (skipping surrogates) needs 32-bit ids.
    big = "".join(chr(c) for c in range(0x20, 0x20 + 72000) if not 0xD800 <= c <= 0xDFFF)
    vocab = Vocab.from_text(big)
    ids = vocab.encode(big)
    assert ids.dtype == np.uint32 and int(ids.max()) == len(vocab) - 1
    assert vocab.decode(ids) == big


@pytest.mark.parametrize("mode, text", [("utf-8", TEXT), ("bytes", TEXT.encode("utf-8") + b"\xfe")])
def test_vocab_dict_round_trip_through_json(mode, text):
    vocab = Vocab.from_text(text, mode)
    restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab and restored.mode == mode


@pytest.mark.parametrize(
    "record",
    [
        {"symbols": ["a"]},
        {"mode": "utf-8", "symbols": ["b", "a"]},
        {"mode": "utf-8", "symbols": ["ab"]},
        {"mode": "bytes", "symbols": [1, 300]},
        {"mode": "latin-1", "symbols": ["a"]},
        {"mode": "utf-8", "symbols": []},
        {"mode": "utf-8", "symbols": "ab"},
        {"mode": ["utf-8"], "symbols": ["a"]},
    ],
)
def test_vocab_from_malformed_dict_raises(record):
    with pytest.raises(CharrnnError):
        Vocab.from_dict(record)


def test_decode_rejects_ids_out_of_range():
    with pytest.raises(CharrnnError, match="out of range"):
        Vocab.from_text("ab").decode([0, 2])


def test_printable_labels_are_visible_and_unambiguous():
    assert printable_symbol("\n") == "\\n" and printable_symbol("\t") == "\\t" and printable_symbol(" ") == "␣"
    assert (
        printable_symbol("\x07") == "\\x07"
        and printable_symbol("\\") == "\\\\"
        and printable_symbol("\u200b") == "\\u200b"
    )
    assert printable_symbol("é") == "é" and printable_symbol(0xC3) == "\\xc3" and printable_symbol(ord("a")) == "a"
    vocab = Vocab.from_text("b a\n\x01")
    assert vocab.printable() == "\\x01 \\n ␣ a b"
    assert len(set(Vocab.from_text(TEXT).labels())) == len(Vocab.from_text(TEXT))


def test_symbol_captions_are_one_visible_glyph():
    assert [symbol_caption(ch) for ch in "\n \ta\\é"] == ["\u21b5", "\u2423", "\u21e5", "a", "\\", "é"]
    assert (
        symbol_caption("\x1b") == "\u241b" and symbol_caption("\x7f") == "\u2421" and symbol_caption("\x9b") == "\ufffd"
    )
    assert symbol_caption("\u2028") == "U+2028" and symbol_caption("\u00a0") == "U+00A0"


def test_terminal_safe_keeps_layout_and_hides_controls():
    assert "".join(terminal_safe(ch) for ch in "a\tb\nc") == "a\tb\nc"
    assert [terminal_safe(ch) for ch in "\x00\x1b\r\x7f\x9b"] == ["\u2400", "\u241b", "\u240d", "\u2421", "\ufffd"]


# --- load_corpus -------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 7])
def test_load_corpus_utf8_matches_vocab(tmp_path, monkeypatch, chunk):
    if chunk:  # exercise the chunked counting/mapping passes with many small chunks
        monkeypatch.setattr(data, "_CHUNK", chunk)
    corpus = load_corpus(write(tmp_path, TEXT * 3))
    assert corpus.vocab == Vocab.from_text(TEXT)
    assert corpus.n_chars == len(TEXT) * 3 and corpus.encoding == "utf-8"
    assert corpus.vocab.decode(corpus.ids) == TEXT * 3


def test_load_corpus_ascii_fast_path(tmp_path):
    corpus = load_corpus(write(tmp_path, "hello world\n" * 10), encoding="UTF8")
    assert corpus.vocab.symbols == sorted(set("hello world\n"))
    assert corpus.vocab.decode(corpus.ids) == "hello world\n" * 10


def test_load_corpus_bytes_mode_accepts_anything(tmp_path):
    raw = bytes(range(256)) * 2 + b"\x00\x00"
    corpus = load_corpus(write(tmp_path, raw), encoding="bytes")
    assert len(corpus.vocab) == 256 and corpus.ids.dtype == np.uint8
    assert corpus.vocab.decode_bytes(corpus.ids) == raw


def test_load_corpus_drops_leading_byte_order_mark(tmp_path):
    corpus = load_corpus(write(tmp_path, "\ufeffab\ufeffa"))
    assert corpus.vocab.decode(corpus.ids) == "ab\ufeffa"


def test_load_corpus_user_errors(tmp_path):
    with pytest.raises(CharrnnError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(CharrnnError, match="is a directory"):
        load_corpus(tmp_path)
    with pytest.raises(CharrnnError, match="is empty"):
        load_corpus(write(tmp_path, b""))
    with pytest.raises(CharrnnError, match="unknown encoding 'latin-9'"):
        load_corpus(write(tmp_path, "ab"), encoding="latin-9")
    with pytest.raises(CharrnnError, match="single distinct symbol"):
        load_corpus(write(tmp_path, "aaaa"))
    with pytest.raises(CharrnnError, match="no text"):
        load_corpus(write(tmp_path, "\ufeff"))


def test_invalid_utf8_names_byte_and_offset(tmp_path):
    path = write(tmp_path, b"hello \xffworld")
    with pytest.raises(CharrnnError) as info:
        load_corpus(path)
    message = str(info.value)
    assert "not valid UTF-8 text (byte 0xff at offset 6)" in message and "--encoding bytes" in message
    assert "\n" not in message
    assert load_corpus(path, "bytes").n_chars == 12


def test_binary_looking_file_suggests_bytes(tmp_path):
    path = write(tmp_path, "some text".encode("utf-16-le"))
    with pytest.raises(CharrnnError, match="NUL bytes.*--encoding bytes"):
        load_corpus(path)


# --- split_corpus ------------------------------------------------------------------------


def test_split_matches_nanogpt_boundaries():
    ids = np.arange(1003)
    parts = split_corpus(ids)
    assert len(parts["train"]) == int(1003 * 0.9) and parts["test"].size == 0
    assert np.array_equal(np.concatenate([parts["train"], parts["val"]]), ids)
    assert np.shares_memory(parts["train"], ids)  # views, not copies


def test_split_with_test_fraction_is_contiguous_in_order():
    ids = np.arange(1000)
    parts = split_corpus(ids, val_frac=0.1, test_frac=0.05)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [850, 100, 50]
    assert np.array_equal(np.concatenate([parts["train"], parts["val"], parts["test"]]), ids)
    assert len(split_corpus(ids, val_frac=0.0)["train"]) == 1000


@pytest.mark.parametrize("val, test", [(-0.1, 0.0), (0.5, 0.5), (1.0, 0.0), (0.1, float("nan")), ("0.1", 0.0)])
def test_split_rejects_bad_fractions(val, test):
    with pytest.raises(CharrnnError):
        split_corpus(np.arange(10), val, test)


# --- BatchLoader -------------------------------------------------------------------------


def positions(n):
    """A corpus whose id at index i is i, so every window shows where it came from."""
    return np.arange(n, dtype=np.uint16)


def test_batches_are_contiguous_streams_with_shifted_targets():
    B, T, n = 3, 4, 40  # streams of (40-1)//3 = 13 characters, 3 windows per epoch
    loader = BatchLoader(positions(n), B, T)
    assert loader.stream_length == 13 and loader.batches_per_epoch == 3
    x, y, reset = loader.next_batch()
    assert reset and x.shape == (B, T) and x.dtype == np.int32 and x.flags.c_contiguous
    assert x[:, 0].tolist() == [0, 13, 26]
    assert np.array_equal(y, x + 1)
    x2, y2, reset2 = loader.next_batch()
    assert not reset2 and np.array_equal(x2[:, 0], x[:, -1] + 1)  # each row continues its stream
    assert loader.position == 2 * T and loader.epoch == 0


def test_loader_wraps_with_reset_and_counts_epochs():
    loader = BatchLoader(positions(40), 3, 4)
    first = loader.next_batch()[0]
    for _ in range(2):
        assert not loader.next_batch()[2]
    assert loader.epoch_fraction == pytest.approx(1.0)
    x, _, reset = loader.next_batch()
    assert reset and loader.epoch == 1 and np.array_equal(x, first)
    assert loader.epoch_fraction == pytest.approx(1 + 1 / 3)


def test_loader_state_dict_resumes_exactly():
    ids = positions(200)
    loader = BatchLoader(ids, 4, 5)
    for _ in range(11):
        loader.next_batch()
    state = loader.state_dict()
    assert state == {"position": loader.position, "epoch": loader.epoch} and state["epoch"] == 1
    resumed = BatchLoader(ids, 4, 5)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for _ in range(15):
        a, b = loader.next_batch(), resumed.next_batch()
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_loader_rejects_state_that_does_not_fit():
    loader = BatchLoader(positions(200), 4, 5)
    with pytest.raises(CharrnnError, match="same corpus"):
        loader.load_state_dict({"position": 10_000, "epoch": 0})
    with pytest.raises(CharrnnError, match="malformed"):
        loader.load_state_dict({"position": 0})


def test_loader_too_short_says_what_is_needed():
    BatchLoader(positions(4 * 5 + 1), 4, 5)  # exactly enough: one batch per epoch
    with pytest.raises(CharrnnError, match=r"needs at least 21; use a smaller --batch-size or --seq-length"):
        BatchLoader(positions(20), 4, 5)


# --- iter_eval_windows -------------------------------------------------------------------


def test_eval_windows_cover_split_once_with_partial_last_window():
    n, B, T = 103, 4, 10  # streams of (103-1)//4 = 25: windows 10, 10, 5
    windows = list(iter_eval_windows(positions(n), B, T))
    assert [w[0].shape for w in windows] == [(4, 10), (4, 10), (4, 5)]
    targets = np.concatenate([y for _, y in windows], axis=1)
    inputs = np.concatenate([x for x, _ in windows], axis=1)
    assert np.array_equal(targets, inputs + 1)
    predicted = np.sort(targets.ravel())
    assert np.array_equal(predicted, np.arange(1, 101))  # all but the first and (n-1) mod B = 2 last
    assert all(x.dtype == np.int32 and x.flags.c_contiguous for x, _ in windows)


def test_eval_windows_reduce_streams_for_short_split():
    assert eval_stream_count(5, 50) == 4 and eval_stream_count(2, 50) == 1 and eval_stream_count(1000, 8) == 8
    ((x, y),) = iter_eval_windows(positions(5), 50, 10)
    assert x.shape == (4, 1) and y.ravel().tolist() == [1, 2, 3, 4]
    with pytest.raises(CharrnnError, match="at least 2"):
        list(iter_eval_windows(positions(1), 4, 10))


def test_ids_in_a_wider_vocabulary(tmp_path):
    path = tmp_path / "narrow.txt"
    path.write_text("abba cab")
    corpus = load_corpus(path)
    wider = Vocab.from_text("abcdefg !")
    assert wider.decode(ids_in_vocab(corpus, wider)) == "abba cab"
    assert ids_in_vocab(corpus, corpus.vocab) is corpus.ids
    with pytest.raises(CharrnnError, match="never saw: c;"):
        ids_in_vocab(corpus, Vocab.from_text("ab !"))
    with pytest.raises(CharrnnError, match="--encoding bytes"):
        ids_in_vocab(corpus, Vocab.from_text(b"abc ", "bytes"))


# --- a user's text against a model's vocabulary --------------------------------------------------


def test_symbol_list_shows_twenty_then_how_many_more():
    assert data.symbol_list(["a", " ", "\n"]) == "a ␣ \\n"
    letters = [chr(c) for c in range(ord("a"), ord("a") + 25)]
    assert data.symbol_list(letters) == " ".join(letters[:20]) + " and 5 more"
    assert data.symbol_list(["Q", 0xC3], counts=[2, 1]) == "Q ×2, \\xc3 ×1"
    assert data.symbol_list(letters, counts=range(25), limit=2) == "a ×0, b ×1, and 23 more"


def test_read_text_file_strips_the_bom_and_checks_utf8(tmp_path):
    path = write(tmp_path, "\ufeffcafé\ufeff")
    assert data.read_text_file(path, "utf-8", "the prime file") == "café\ufeff"  # only a leading BOM is a mark
    assert data.read_text_file(path, "bytes", "the prime file") == "\ufeffcafé\ufeff".encode("utf-8")  # raw
    bad = write(tmp_path, b"ab\xffc", "bad.txt")
    with pytest.raises(
        CharrnnError, match=r"cannot read the text: .*bad.txt is not valid UTF-8 text \(byte 0xff at offset 2\)"
    ):
        data.read_text_file(bad, "utf-8", "the text")
    assert data.read_text_file(bad, "bytes", "the text") == b"ab\xffc"
    with pytest.raises(CharrnnError, match="cannot read the prime file: text file .*missing.txt does not exist"):
        data.read_text_file(tmp_path / "missing.txt", "utf-8", "the prime file")
    with pytest.raises(CharrnnError, match="cannot read the prime file: text file .* cannot be opened"):
        data.read_text_file(tmp_path, "utf-8", "the prime file")  # a directory


def test_known_text_refuses_or_drops_unknown_symbols():
    vocab = Vocab.from_text("abc \n")
    assert data.known_text(vocab, "a b\n", "the text") == "a b\n"
    with pytest.raises(
        CharrnnError, match=r"^the text has 2 symbol\(s\) the model never saw: Z é; remove them or pass --drop-unknown$"
    ):
        data.known_text(vocab, "a éZ", "the text")
    notes = []
    assert data.known_text(vocab, "a éZZ", "the text", drop_unknown=True, notify=notes.append) == "a "
    assert notes == ["dropped 2 unknown symbol(s): Z é"]
    with pytest.raises(
        CharrnnError,
        match=r"x.txt has 3 characters outside the model's vocabulary \(Z ×2, é ×1\); "
        r"remove them or pass --skip-unknown",
    ):
        data.known_text(vocab, "a éZZ", "x.txt", flag="--skip-unknown", counted=True)
    assert data.known_text(vocab, "\ufeffab".encode("utf-8"), "the text") == "ab"  # bytes are decoded, BOM and all
    with pytest.raises(CharrnnError, match="the prime text is not valid UTF-8 text"):
        data.known_text(vocab, b"a\xff", "the prime text")
    with pytest.raises(CharrnnError, match="the text is not valid UTF-8"):
        data.known_text(vocab, "a\udcff", "the text")  # what a terminal's undecodable byte becomes


def test_known_text_in_bytes_mode():
    vocab = Vocab.from_text(b"ab\xc3", "bytes")
    assert data.known_text(vocab, "a\udcc3b", "the text") == b"a\xc3b"  # the terminal's byte, as it was
    notes = []
    assert data.known_text(vocab, b"a\xffb\x00", "the text", drop_unknown=True, notify=notes.append) == b"ab"
    assert notes == ["dropped 2 unknown symbol(s): \\x00 \\xff"]
