"""`charrnn export CHECKPOINT --format onnx|safetensors --out FILE`: the model for other runtimes."""

from pathlib import Path

import click

from charrnn.checkpoint import resolve_checkpoint
from charrnn.commands import WHICH
from charrnn.errors import CharrnnError
from charrnn.export import FORMATS, SUFFIXES, export_model, onnx_state_names
from charrnn.saved import load_model


def _format_of(fmt, out):
    if fmt is not None:
        return fmt
    inferred = SUFFIXES.get(Path(out).suffix.lower())
    if inferred is None:
        raise CharrnnError(f"cannot tell the format from the name {out}; give --format {' or '.join(FORMATS)}")
    return inferred


def _layout(fmt, config):
    if fmt == "onnx":
        states = onnx_state_names(config)
        return f"one step: char, {', '.join(states)} in; logits, {', '.join(s + '_next' for s in states)} out"
    return f"PyTorch names: weight_ih_l0 ... bias_hh_l{config.layers - 1} for torch.nn.{config.cell.upper()}, decoder.*"


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="onnx: a single-step graph for any ONNX runtime; safetensors: weights under PyTorch's names "
    "[default: from --out's suffix, .onnx or .safetensors]",
)
@click.option("--out", "-o", required=True, type=click.Path(), help="the file to write (its directory must exist)")
@WHICH
def export(checkpoint, fmt, out, which):
    """Write CHECKPOINT as an ONNX model or as PyTorch-named safetensors weights.

    The ONNX file is one step of the model: inputs "char" (int64, one id per stream) and every layer's
    state (h_l0, c_l0, h_l1, ..., float32 streams x hidden; no c for gru and rnn), outputs "logits"
    and the new states (h_l0_next, ...). The safetensors file loads into torch.nn.LSTM/GRU/RNN
    (input_size = vocabulary size) with load_state_dict; decoder.weight and decoder.bias into
    torch.nn.Linear(hidden, vocabulary). Both carry the vocabulary and configuration as JSON metadata
    ("vocab", "model"). See README.md, "Export".
    """
    fmt = _format_of(fmt, out)
    path = resolve_checkpoint(checkpoint, which)
    if Path(out).resolve() == path.resolve():
        raise CharrnnError(f"--out {out} is the checkpoint being exported; pick another file name")
    model, vocab, meta = load_model(path)
    extra = {"checkpoint": path.name}
    if isinstance(meta.get("iteration"), int):
        extra["iteration"] = meta["iteration"]
    written = export_model(model, vocab, fmt, out, extra)
    cfg = model.config
    click.echo(
        f"wrote {written} ({fmt}; {cfg.cell} {cfg.layers}x{cfg.hidden}, vocabulary {cfg.vocab_size}; "
        f"{_layout(fmt, cfg)})"
    )
