import json
import os

import numpy as np
import pytest

import charrnn
from charrnn import checkpoint as ckpt
from charrnn.checkpoint import (
    FORMAT_VERSION,
    atomic_write,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    parse_checkpoint_name,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    stale_pointer,
    update_pointers,
)
from charrnn.errors import CharrnnError


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "param/layer0.W_x": rng.standard_normal((5, 12)).astype(np.float32),
        "param/layer0.b": rng.standard_normal(12).astype(np.float64),
        "optim/m/layer0.W_x": rng.standard_normal((5, 12)).astype(np.float32),
        "optim/step": np.array(17, dtype=np.int64),
        "state": np.zeros((2, 1, 3, 4), dtype=np.float32),
        "data/order": np.arange(6, dtype=np.int32),
        "odd name %2F with spaces, unicode \u00e9 and ../dots": np.array([True, False]),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def sample_meta():
    rng_state = np.random.default_rng(123).bit_generator.state  # 128-bit ints inside
    return {
        "config": {"cell": "lstm", "vocab_size": 5, "hidden": 4, "layers": 1, "dropout": 0.0},
        "vocab": ["\n", " ", "a", "\u00e9", "\u2603"],
        "iteration": 2000,
        "epoch": 2.5,
        "loss_history": [[1, 4.1], [2, 3.9]],
        "val_loss": None,
        "rng": rng_state,
        "flags": {"resumed": True},
    }


def write_raw_npz(path, meta_bytes=None, **arrays):
    """An .npz written without charrnn, to plant specific defects."""
    if meta_bytes is not None:
        arrays[ckpt.META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def meta_json(**fields):
    return json.dumps(fields).encode("utf-8")


# ----------------------------------------------------------------------------- round trip


def test_round_trip_preserves_names_dtypes_values_and_order(tmp_path):
    arrays, meta = sample_arrays(), sample_meta()
    written = save_checkpoint(tmp_path / "c.npz", arrays, meta)
    assert written == tmp_path / "c.npz"

    loaded, loaded_meta = load_checkpoint(written)

    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable  # optimizers update loaded state in place
    assert loaded_meta["format_version"] == FORMAT_VERSION
    assert loaded_meta["charrnn_version"] == charrnn.__version__
    for key, value in meta.items():
        assert loaded_meta[key] == value, key


def test_rng_state_in_meta_restores_the_exact_stream(tmp_path):
    generator = np.random.default_rng(7)
    generator.random(3)
    save_checkpoint(tmp_path / "c.npz", {}, {"rng": generator.bit_generator.state})
    expected = generator.random(5)

    _, meta = load_checkpoint(tmp_path / "c.npz")
    restored = np.random.default_rng()
    restored.bit_generator.state = meta["rng"]
    np.testing.assert_array_equal(restored.random(5), expected)


def test_numpy_scalars_in_meta_become_plain_numbers(tmp_path):
    save_checkpoint(
        tmp_path / "c.npz", {}, {"val_loss": np.float32(1.5), "iteration": np.int64(3), "curve": np.array([1.0, 2.0])}
    )
    _, meta = load_checkpoint(tmp_path / "c.npz")
    assert meta["val_loss"] == 1.5 and meta["iteration"] == 3 and meta["curve"] == [1.0, 2.0]


def test_meta_cannot_override_format_version(tmp_path):
    save_checkpoint(tmp_path / "c.npz", {}, {"format_version": 99})
    _, meta = load_checkpoint(tmp_path / "c.npz")
    assert meta["format_version"] == FORMAT_VERSION


def test_save_refuses_reserved_name_and_object_arrays_without_leaving_files(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "c.npz", {ckpt.META_KEY: np.zeros(2)}, {})
    with pytest.raises(ValueError, match="pickle"):
        save_checkpoint(tmp_path / "c.npz", {"obj": np.array([{}], dtype=object)}, {})
    assert list(tmp_path.iterdir()) == []


def test_save_creates_missing_directories(tmp_path):
    path = save_checkpoint(tmp_path / "run" / "sub" / "c.npz", {"x": np.ones(2)}, {})
    assert load_checkpoint(path)[0]["x"].tolist() == [1.0, 1.0]


def test_unwritable_destination_is_a_charrnn_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CharrnnError, match="cannot write checkpoint"):
        save_checkpoint(blocker / "c.npz", {"x": np.ones(2)}, {})


# ----------------------------------------------------------------------------- atomicity


def test_failed_replace_keeps_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.npz", {"x": np.zeros(3)}, {"iteration": 1})

    def broken_replace(source, target):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CharrnnError, match="simulated crash"):
        save_checkpoint(path, {"x": np.ones(3)}, {"iteration": 2})
    monkeypatch.undo()

    arrays, meta = load_checkpoint(path)
    assert meta["iteration"] == 1 and arrays["x"].tolist() == [0.0, 0.0, 0.0]
    assert [child.name for child in tmp_path.iterdir()] == ["c.npz"]


def test_interrupt_mid_write_keeps_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.npz", {"a": np.zeros(3), "b": np.zeros(3)}, {"iteration": 1})
    real_write_array = np.lib.format.write_array
    calls = []

    def interrupted_write_array(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # first member is already in the temp file
            raise KeyboardInterrupt
        return real_write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted_write_array)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"a": np.ones(3), "b": np.ones(3)}, {"iteration": 2})
    monkeypatch.undo()

    assert len(calls) == 2
    _, meta = load_checkpoint(path)
    assert meta["iteration"] == 1
    assert [child.name for child in tmp_path.iterdir()] == ["c.npz"]


def test_save_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_checkpoint(tmp_path / "c.npz", {"x": np.ones(2)}, {})
    assert len(synced) == 2
    if isinstance(synced[1], str):
        assert synced[1] == os.path.realpath(tmp_path)


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path, durable):
    target = tmp_path / "out.bin"

    def explode(stream):
        stream.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode, durable=durable)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda stream: stream.write(b"old"), durable=durable)
    with pytest.raises(RuntimeError):
        atomic_write(target, explode, durable=durable)
    assert [child.name for child in tmp_path.iterdir()] == ["out.bin"] and target.read_bytes() == b"old"
    with pytest.raises(OSError):  # the file system's errors stay OSErrors, for the caller to word
        atomic_write(target / "below-a-file", lambda stream: stream.write(b"x"), durable=durable)


def test_atomic_write_fsyncs_only_when_durable(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_write(tmp_path / "sub" / "fast.txt", lambda stream: stream.write(b"fast"), durable=False)
    assert synced == [] and (tmp_path / "sub" / "fast.txt").read_bytes() == b"fast"
    atomic_write(tmp_path / "sub" / "safe.txt", lambda stream: stream.write(b"safe"))
    assert len(synced) == 2  # the file, then the directory


# ----------------------------------------------------------------------------- refusing bad files


@pytest.fixture
def good_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "good.npz", sample_arrays(), sample_meta())


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 0.98])
def test_truncated_checkpoint_is_refused(good_checkpoint, tmp_path, keep_fraction):
    data = good_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CharrnnError, match="truncated or corrupt"):
        load_checkpoint(truncated)


def test_flipped_bytes_inside_array_data_are_refused(good_checkpoint, tmp_path):
    data = bytearray(good_checkpoint.read_bytes())
    marker = data.index(b"\x93NUMPY")  # first member's .npy header; its data follows
    for offset in range(marker + 200, marker + 240):
        data[offset] ^= 0xFF
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CharrnnError, match="truncated or corrupt"):
        load_checkpoint(damaged)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CharrnnError, match="not a .npz archive"):
        load_checkpoint(path)


def test_object_array_is_refused_as_pickle_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):  # unpickling would call open(marker, "w")
            return (open, (str(marker), "w"))

    path = write_raw_npz(
        tmp_path / "evil.npz", meta_json(format_version=1), weights=np.ones(3), evil=np.array([Payload()], dtype=object)
    )
    with pytest.raises(CharrnnError, match="pickle") as refusal:
        load_checkpoint(path)
    assert "evil" in str(refusal.value)
    assert not marker.exists()


def test_unknown_newer_format_version_is_refused(tmp_path):
    path = write_raw_npz(tmp_path / "future.npz", meta_json(format_version=FORMAT_VERSION + 1), x=np.ones(2))
    with pytest.raises(CharrnnError, match="upgrade charrnn"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [None, 0, "1", True, 1.0])
def test_invalid_format_version_is_refused(tmp_path, version):
    fields = {} if version is None else {"format_version": version}
    path = write_raw_npz(tmp_path / "odd.npz", meta_json(**fields), x=np.ones(2))
    with pytest.raises(CharrnnError, match="unknown checkpoint format version"):
        load_checkpoint(path)


def test_missing_meta_is_refused(tmp_path):
    path = write_raw_npz(tmp_path / "plain.npz", x=np.ones(2))
    with pytest.raises(CharrnnError, match="no charrnn metadata"):
        load_checkpoint(path)


@pytest.mark.parametrize("meta_bytes", [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000])
def test_invalid_meta_is_refused(tmp_path, meta_bytes):
    path = write_raw_npz(tmp_path / "bad-meta.npz", meta_bytes, x=np.ones(2))
    with pytest.raises(CharrnnError, match="unreadable metadata"):
        load_checkpoint(path)


def test_meta_with_wrong_dtype_is_refused(tmp_path):
    path = write_raw_npz(tmp_path / "bad-meta.npz", x=np.ones(2), **{ckpt.META_KEY: np.ones(3)})
    with pytest.raises(CharrnnError, match="unreadable metadata"):
        load_checkpoint(path)


def test_missing_file_and_empty_directory_are_refused(tmp_path):
    with pytest.raises(CharrnnError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CharrnnError, match="contains no checkpoints"):
        load_checkpoint(tmp_path)


def test_error_messages_are_one_line(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CharrnnError) as refusal:
        load_checkpoint(path)
    assert "\n" not in str(refusal.value)


# ----------------------------------------------------------------------------- run directories


def test_checkpoint_names_encode_iteration_and_val_loss():
    assert checkpoint_name(2000, 1.41234) == "ckpt_iter002000_val1.4123.npz"
    assert checkpoint_name(5, None) == "ckpt_iter000005.npz"
    assert parse_checkpoint_name("ckpt_iter002000_val1.4123.npz") == (2000, 1.4123)
    assert parse_checkpoint_name("ckpt_iter1234567.npz") == (1234567, None)
    assert parse_checkpoint_name(checkpoint_name(3, float("nan")))[0] == 3
    for other in ["best.json", "ckpt_iter12_valxyz.npz", "ckpt_iter12.npz.tmp", ".ckpt_iter12.npz.ab12.tmp"]:
        assert parse_checkpoint_name(other) is None, other


def make_run(run_dir, points):
    """Save one tiny checkpoint per (iteration, val_loss); return {iteration: path}."""
    paths = {}
    for iteration, val_loss in points:
        path = save_checkpoint(
            run_dir / checkpoint_name(iteration, val_loss), {"x": np.full(2, iteration)}, {"iteration": iteration}
        )
        paths[iteration] = path
    return paths


def test_list_checkpoints_sorts_numerically_and_ignores_other_files(tmp_path):
    make_run(tmp_path, [(1_000_000, 1.0), (999_999, 1.2), (50, 2.0)])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "ckpt_iter000007.npz").mkdir()  # a directory is not a checkpoint
    entries = list_checkpoints(tmp_path)
    assert [entry.iteration for entry in entries] == [50, 999_999, 1_000_000]
    assert entries[0].val_loss == 2.0


def test_resolve_uses_pointers(tmp_path):
    paths = make_run(tmp_path, [(100, 1.5), (200, 1.3), (300, 1.4)])
    update_pointers(tmp_path, paths[100], 1.5, is_best=True)
    update_pointers(tmp_path, paths[200], 1.3, is_best=True)
    update_pointers(tmp_path, paths[300], 1.4, is_best=False)
    assert resolve_checkpoint(tmp_path) == paths[200]
    assert resolve_checkpoint(tmp_path, "latest") == paths[300]
    assert resolve_checkpoint(paths[100]) == paths[100]
    assert load_checkpoint(tmp_path, which="latest")[1]["iteration"] == 300
    assert json.loads((tmp_path / "best.json").read_text())["file"] == paths[200].name


def test_pointer_wins_over_scan_after_resuming_from_an_earlier_checkpoint(tmp_path):
    paths = make_run(tmp_path, [(100, 1.5), (200, 1.3), (150, 1.6)])
    update_pointers(tmp_path, paths[150], 1.6, is_best=False)
    assert resolve_checkpoint(tmp_path, "latest") == paths[150]


@pytest.mark.parametrize(
    "pointer_text",
    [None, "{broken", '{"file": "ckpt_iter000999_val1.0000.npz"}', '{"file": "../outside.npz"}', '["list"]'],
)
def test_resolve_scans_names_when_pointers_are_missing_or_stale(tmp_path, pointer_text):
    run = tmp_path / "run"
    paths = make_run(run, [(100, 1.5), (200, 1.3), (300, 1.4)])
    save_checkpoint(tmp_path / "outside.npz", {}, {})
    if pointer_text is not None:
        (run / "best.json").write_text(pointer_text)
        (run / "latest.json").write_text(pointer_text)
    assert resolve_checkpoint(run, "best") == paths[200]
    assert resolve_checkpoint(run, "latest") == paths[300]


def test_stale_pointer_names_only_a_missing_file(tmp_path):
    run = tmp_path / "run"
    paths = make_run(run, [(100, 1.5), (200, 1.3)])
    assert stale_pointer(run, "latest") is None  # no pointer file yet
    update_pointers(run, paths[200], 1.3, is_best=True)
    assert stale_pointer(run, "latest") is None
    paths[200].unlink()
    assert stale_pointer(run, "latest") == paths[200].name
    assert resolve_checkpoint(run, "latest") == paths[100]  # resolving still falls back to the scan
    (run / "latest.json").write_text('{"file": "../outside.npz"}')
    assert stale_pointer(run, "latest") is None  # a malformed pointer is ignored, not reported
    assert stale_pointer(tmp_path / "absent", "latest") is None


def test_best_falls_back_to_latest_without_val_losses(tmp_path):
    paths = make_run(tmp_path, [(100, None), (200, None)])
    assert resolve_checkpoint(tmp_path, "best") == paths[200]


def test_resolve_refuses_unknown_choice(tmp_path):
    with pytest.raises(CharrnnError, match="'best' or 'latest'"):
        resolve_checkpoint(tmp_path, "newest")


def test_update_pointers_leaves_best_alone_and_rejects_foreign_paths(tmp_path):
    run = tmp_path / "run"
    paths = make_run(run, [(100, 1.0), (200, 2.0)])
    update_pointers(run, paths[100], 1.0, is_best=True)
    update_pointers(run, paths[200], 2.0, is_best=False)
    assert json.loads((run / "best.json").read_text()) == {"file": paths[100].name, "iteration": 100, "val_loss": 1.0}
    assert json.loads((run / "latest.json").read_text())["iteration"] == 200
    assert sorted(child.name for child in run.iterdir() if not child.name.startswith("ckpt_")) == [
        "best.json",
        "latest.json",
    ]  # no temp files left behind
    with pytest.raises(ValueError, match="not inside"):
        update_pointers(run, tmp_path / "elsewhere.npz", 1.0, is_best=True)


def test_prune_keeps_last_k_and_never_deletes_best_or_latest(tmp_path):
    points = [(100, 1.1), (200, 1.5), (300, 1.6), (400, 1.7), (500, 1.8), (600, 1.9)]
    paths = make_run(tmp_path, points)
    update_pointers(tmp_path, paths[100], 1.1, is_best=True)
    update_pointers(tmp_path, paths[300], 1.6, is_best=False)  # e.g. resumed from 300
    (tmp_path / "notes.txt").write_text("keep me")

    deleted = prune_checkpoints(tmp_path, keep_last=2)

    assert sorted(deleted) == [paths[200], paths[400]]
    remaining = {entry.iteration for entry in list_checkpoints(tmp_path)}
    assert remaining == {100, 300, 500, 600}
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "best.json").exists()
    assert load_checkpoint(tmp_path)[1]["iteration"] == 100


def test_prune_without_pointers_protects_scanned_best(tmp_path):
    paths = make_run(tmp_path, [(100, 0.9), (200, 1.5), (300, 1.6)])
    deleted = prune_checkpoints(tmp_path, keep_last=0)
    assert deleted == [paths[200]]
    assert {entry.iteration for entry in list_checkpoints(tmp_path)} == {100, 300}
    assert prune_checkpoints(tmp_path, keep_last=10) == []
