"""charrnn export: onnxruntime runs the ONNX step to charrnn's logits and states, torch.nn loads the
safetensors weights (strict) to charrnn's loss, the README's examples run, bad input is one line."""

import ast
import contextlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_main
from click.testing import CliRunner
from conftest import synthetic_text

from charrnn.cli import cli
from charrnn.data import Vocab
from charrnn.errors import CharrnnError
from charrnn.export import FORMATS, check_exportable, exportable_cells, onnx_state_names, params_from_torch
from charrnn.kernels import GATE_BLOCKS, LSTM
from charrnn.model import Model, ModelConfig
from charrnn.saved import load_model, save_model

CELLS = ("lstm", "gru", "rnn")
HIDDEN = 24
INSTALL = "pip install -e '.[export]'"
README = Path(__file__).resolve().parent.parent / "README.md"


def needs(package):
    return pytest.importorskip(package, reason=f"{package} is in the export extra: {INSTALL}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A briefly trained 2-layer run directory per cell type (trained weights, not the initial ones).

    Its corpus holds the characters of the README example's prime."""
    root = tmp_path_factory.mktemp("export_runs")
    corpus = root / "corpus.txt"
    corpus.write_text(synthetic_text(8000) + "ROMEO: alpha beta.\n", encoding="utf-8")
    made = {}
    for cell in CELLS:
        options = f"--model {cell} --hidden {HIDDEN} --layers 2 --batch-size 8 --seq-length 32 --lr 1e-2"
        options += " --max-iters 80 --eval-every 40 --print-every 1000 --sample-length 10"
        result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(root / cell), *options.split()])
        assert result.exit_code == 0, result.output
        made[cell] = root / cell
    return made


def export(capsys, run_dir, out, *options):
    code, stdout, stderr = run_main(capsys, "export", run_dir, "--out", out, *options)
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out} ") and stdout.count("\n") == 1
    return out


def two_streams():
    """Two 500-character texts the runs never saw, as ids (500, 2), and the texts."""
    return synthetic_text(500, seed=11), synthetic_text(500, seed=12)


def assert_float32_close(actual, expected, what):
    # 1e-5 absolute where values are at most 1 (h, most logits); beyond that (an LSTM's c grows past
    # 10) float32 carries only ~7 digits, so the bound grows with the value.
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=what)


# ------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("cell", CELLS)
def test_onnxruntime_steps_to_charrnns_logits_and_states(capsys, tmp_path, runs, cell):
    ort = needs("onnxruntime")
    needs("onnx")
    path = export(capsys, runs[cell], tmp_path / "model.onnx")
    model, vocab, _ = load_model(runs[cell])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = onnx_state_names(model.config)
    assert [i.name for i in session.get_inputs()] == ["char", *names]
    assert [o.name for o in session.get_outputs()] == ["logits", *[name + "_next" for name in names]]
    assert names == (["h_l0", "c_l0", "h_l1", "c_l1"] if cell == LSTM else ["h_l0", "h_l1"])

    ids = np.stack([vocab.encode(text) for text in two_streams()], axis=1).astype(np.int64)
    state = model.initial_state(2)
    feeds = {name: np.zeros((2, HIDDEN), np.float32) for name in names}
    for position, chars in enumerate(ids):
        expected = model.step(chars, state)
        logits, *new_state = session.run(None, {"char": chars, **feeds})
        feeds = dict(zip(names, new_state))
        assert_float32_close(logits, expected, f"logits after character {position}")
        for layer in range(2):
            assert_float32_close(feeds[f"h_l{layer}"], state[0, layer], f"h of layer {layer} at {position}")
            if cell == LSTM:
                assert_float32_close(feeds[f"c_l{layer}"], state[1, layer], f"c of layer {layer} at {position}")
    assert np.abs(state[0]).max() > 0.1  # the state really moved


def test_onnx_metadata_holds_the_vocabulary_and_configuration(capsys, tmp_path, runs):
    onnx = needs("onnx")
    path = export(capsys, runs["gru"], tmp_path / "model.onnx")
    model, vocab, meta = load_model(runs["gru"])
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded)
    props = {p.key: p.value for p in loaded.metadata_props}
    assert json.loads(props["vocab"]) == vocab.to_dict()
    assert json.loads(props["model"]) == model.config.to_dict()
    assert props["iteration"] == str(meta["iteration"]) and props["checkpoint"].startswith("ckpt_iter")
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    for name, array in model.params.items():
        np.testing.assert_array_equal(initializers[name], array, err_msg=name)


# ------------------------------------------------------------------------------------ safetensors
@pytest.mark.parametrize("cell", CELLS)
def test_safetensors_holds_pytorchs_layout_and_maps_back_exactly(capsys, tmp_path, runs, cell):
    needs("safetensors")
    from safetensors import safe_open

    path = export(capsys, runs[cell], tmp_path / "model.safetensors")
    model, vocab, _ = load_model(runs[cell])
    V, H, G = model.config.vocab_size, HIDDEN, GATE_BLOCKS[cell]
    with safe_open(str(path), framework="np") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    assert json.loads(metadata["vocab"]) == vocab.to_dict()
    assert json.loads(metadata["model"]) == model.config.to_dict()
    expected_shapes = {"decoder.weight": (V, H), "decoder.bias": (V,)}
    for layer in range(2):
        expected_shapes[f"weight_ih_l{layer}"] = (G * H, V if layer == 0 else H)
        expected_shapes[f"weight_hh_l{layer}"] = (G * H, H)
        expected_shapes[f"bias_ih_l{layer}"] = expected_shapes[f"bias_hh_l{layer}"] = (G * H,)
    assert {name: t.shape for name, t in tensors.items()} == expected_shapes
    assert all(t.dtype == np.float32 for t in tensors.values())
    back = params_from_torch(model.config, tensors)
    assert set(back) == set(model.params)
    for name, array in model.params.items():
        np.testing.assert_array_equal(back[name], array, err_msg=name)


def readme_export_examples():
    """The python code blocks of README.md's Export section, by the runtime they import."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return {("onnxruntime" if "import onnxruntime" in block else "torch"): block for block in blocks}


def run_example(code, directory, monkeypatch):
    """Runs README code in `directory`; returns (its variables, what it printed)."""
    monkeypatch.chdir(directory)
    namespace, printed = {"__name__": "__readme__"}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace, printed.getvalue()


@pytest.mark.parametrize("cell", CELLS)
def test_readme_pytorch_example_loads_strictly_and_gives_charrnns_loss(capsys, tmp_path, runs, cell, monkeypatch):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional reference, not in any extra: pip install torch")
    needs("safetensors")
    export(capsys, runs[cell], tmp_path / "model.safetensors")
    model, vocab, _ = load_model(runs[cell])
    # The README's code builds torch.nn.LSTM/GRU/RNN(input_size=V, ...) and nn.Linear and calls
    # load_state_dict (strict, the default) with the file's tensors.
    namespace, _ = run_example(readme_export_examples()["torch"], tmp_path, monkeypatch)
    rnn, decoder = namespace["rnn"], namespace["decoder"]
    assert isinstance(rnn, {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell])
    assert rnn.input_size == model.config.vocab_size and rnn.num_layers == 2

    ids = np.stack([vocab.encode(text) for text in two_streams()]).astype(np.int64)  # (2, 500)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    expected, _ = model.loss(inputs, targets, model.initial_state(2))
    with torch.no_grad():
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(inputs), model.config.vocab_size).float()
        logits = decoder(rnn(one_hot)[0])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1)
        )
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected < np.log(model.config.vocab_size) - 0.5  # trained: well below a uniform guess


# ----------------------------------------------------------------------------- the README example
def test_readme_onnxruntime_example_samples_what_charrnn_would(capsys, tmp_path, runs, monkeypatch):
    needs("onnxruntime")
    needs("onnx")
    code = readme_export_examples()["onnxruntime"]
    assert len(code.splitlines()) <= 22
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"json", "numpy", "onnxruntime"}  # onnxruntime and numpy alone

    export(capsys, runs["lstm"], tmp_path / "model.onnx")
    namespace, printed = run_example(code, tmp_path, monkeypatch)
    prime, length, temperature, seed = (namespace[k] for k in ("prime", "length", "temperature", "seed"))

    # The same draws from charrnn's own step: the example samples what the checkpoint's model gives.
    model, vocab, _ = load_model(runs["lstm"])
    symbols, rng, state = vocab.symbols, np.random.default_rng(seed), model.initial_state(1)
    text = list(prime)
    for position in range(len(prime) + length - 1):
        logits = model.step(np.array([symbols.index(text[position])]), state)
        if position + 1 >= len(prime):
            p = np.exp((logits[0] - logits[0].max()) / temperature)
            text.append(symbols[rng.choice(len(p), p=p / p.sum())])
    assert printed == "".join(text) + "\n"
    assert printed.startswith(prime) and len(printed) == len(prime) + length + 1


# ---------------------------------------------------------------------------------- bad input
def one_line_error(code, stdout, stderr, exit_code=1):
    assert code == exit_code and stdout == ""
    assert stderr.startswith("charrnn: error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


def unwritable_directory(tmp_path):
    """A directory in which this process cannot create files: a read-only one, or, for root, who
    ignores permission bits, /sys (the kernel refuses new files there)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    for candidate in (locked, Path("/sys")):
        probe = candidate / ".charrnn_probe"
        try:
            probe.touch()
        except OSError:
            return candidate
        probe.unlink()
    pytest.skip("no directory here refuses new files to this process")


def test_files_that_are_not_charrnn_checkpoints(capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    plain_npz = tmp_path / "weights.npz"
    np.savez(plain_npz, weights=np.zeros(3))
    for source, phrase in ((text, "not a .npz archive"), (plain_npz, "not a charrnn checkpoint")):
        out = tmp_path / "model.onnx"
        code, stdout, stderr = run_main(capsys, "export", source, "--out", out)
        one_line_error(code, stdout, stderr)
        assert phrase in stderr and not out.exists(), stderr
    one_line_error(*run_main(capsys, "export", tmp_path / "missing_run", "--out", tmp_path / "m.onnx"))


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_output_paths_that_cannot_be_written(capsys, tmp_path, runs, fmt):
    needs(fmt)
    cases = [
        (tmp_path / "no_such_dir" / f"model.{fmt}", "does not exist; create it first"),
        (tmp_path, "is a directory"),
        (unwritable_directory(tmp_path) / f"model.{fmt}", "cannot write"),
    ]
    for out, phrase in cases:
        code, stdout, stderr = run_main(capsys, "export", runs["rnn"], "--format", fmt, "--out", out)
        one_line_error(code, stdout, stderr)
        assert phrase in stderr, stderr
    assert not (tmp_path / "no_such_dir").exists()  # a typo in --out creates nothing


def test_the_checkpoint_itself_is_never_overwritten(capsys, tmp_path, runs):
    checkpoint = sorted(runs["rnn"].glob("ckpt_iter*.npz"))[-1]
    before = checkpoint.read_bytes()
    code, stdout, stderr = run_main(capsys, "export", checkpoint, "--format", "onnx", "--out", checkpoint)
    one_line_error(code, stdout, stderr)
    assert "is the checkpoint being exported" in stderr and checkpoint.read_bytes() == before


def test_unknown_formats_are_one_line(capsys, tmp_path, runs):
    code, stdout, stderr = run_main(capsys, "export", runs["rnn"], "--format", "tflite", "--out", tmp_path / "m")
    one_line_error(code, stdout, stderr, exit_code=2)
    assert "'tflite' is not one of 'onnx', 'safetensors'" in stderr
    code, stdout, stderr = run_main(capsys, "export", runs["rnn"], "--out", tmp_path / "model.pb")
    one_line_error(code, stdout, stderr)
    assert "give --format onnx or safetensors" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, package", [("onnx", "onnx"), ("safetensors", "safetensors")])
def test_a_missing_package_says_how_to_install_the_extra(capsys, tmp_path, runs, monkeypatch, fmt, package):
    monkeypatch.setitem(sys.modules, package, None)  # what Python does for a package that is not installed
    code, stdout, stderr = run_main(capsys, "export", runs["rnn"], "--format", fmt, "--out", tmp_path / "m")
    one_line_error(code, stdout, stderr)
    assert f"needs the export extra ({package} is not installed): {INSTALL}" in stderr


def test_a_failed_export_leaves_the_existing_file_whole(capsys, tmp_path, runs):
    needs("onnx")
    out = export(capsys, runs["gru"], tmp_path / "model.onnx")
    before = out.read_bytes()
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    one_line_error(*run_main(capsys, "export", broken, "--out", out))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.npz", "model.onnx"]  # no temp file left


def test_lnlstm_is_refused_in_one_line():
    for fmt, name in (("onnx", "ONNX"), ("safetensors", "safetensors")):
        with pytest.raises(CharrnnError, match=rf"^exporting lnlstm models to {name} is not supported yet"):
            check_exportable("lnlstm", fmt)


UNCONVERTED = [(cell, fmt) for fmt in FORMATS for cell in GATE_BLOCKS if cell not in exportable_cells(fmt)]


@pytest.mark.parametrize("cell, fmt", UNCONVERTED)
def test_a_cell_without_a_conversion_is_one_line_and_writes_nothing(capsys, tmp_path, cell, fmt):
    vocab = Vocab.from_text("abc def\n")
    checkpoint = save_model(tmp_path / "model.npz", Model(ModelConfig(cell, len(vocab), 8, 2)), vocab)
    out = tmp_path / f"model.{fmt}"
    code, stdout, stderr = run_main(capsys, "export", checkpoint, "--out", out)
    one_line_error(code, stdout, stderr)
    assert f"exporting {cell} models to" in stderr and "not supported yet" in stderr and not out.exists()


def test_lstm_gru_and_rnn_convert_to_both_formats():
    for fmt in FORMATS:
        assert set(CELLS) <= set(exportable_cells(fmt))
