"""What a charrnn checkpoint holds, on top of charrnn.checkpoint's file format: the one schema.

Arrays:  "param/<name>"  model parameters (PARAM)
         "optim/<key>"   optimizer state (OPTIM; training checkpoints)
         "state/train"   hidden state carried across training windows, (2, L, B, H) (CARRIED)
Meta, about the model (save_model writes these, model_from_checkpoint reads them):
         "model" (ModelConfig dict), "vocab" (Vocab dict), and "plan" (charrnn.plan: how its windows were
         cut between threads), which a loaded model keeps, so resuming and evaluating compute what the
         run computed, to the bit on one machine.
Meta, about the run (constant over its checkpoints): "train_config" (charrnn.train_config's options),
         "corpus" (path, encoding, sha256, n_chars, val_frac, test_frac), "unigram" (training character
         frequencies, where unprimed samples start); and "world_size" (the MPI ranks of the session
         that wrote the checkpoint: a record only, any number of ranks resumes it; charrnn.distributed).
Meta, the training state (charrnn.train_state.TrainState writes and reads these, with the optim/ and
         state/train arrays): "iteration", "epoch", "history" (the evaluations: iter, epoch, train_loss,
         val_loss, seconds), "val_loss" (of this checkpoint; null without validation), "best_val_loss",
         "train_seconds", "first_loss", and for resuming "loader" (position, epoch), "rng" (the dropout
         generator's state), "optimizer" (name, lr, settings), "lr_scale" (halved at each divergence) and
         "schedule_end" (where a time-budgeted cosine ends, once measured; null otherwise).
"""

import math
from pathlib import Path

import numpy as np

from charrnn.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from charrnn.data import Vocab, ids_in_vocab, split_corpus
from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig
from charrnn.plan import Plan
from charrnn.sampling import start_logits

PARAM = "param/"
OPTIM = "optim/"
CARRIED = "state/train"


def save_model(path, model, vocab, meta=None, extra_arrays=None):
    arrays = {PARAM + name: array for name, array in model.params.items()}
    arrays.update(extra_arrays or {})
    full_meta = dict(meta or {})
    full_meta["model"] = model.config.to_dict()
    full_meta["vocab"] = vocab.to_dict()
    full_meta["plan"] = model.plan.to_dict()
    return save_checkpoint(path, arrays, full_meta)


def model_from_checkpoint(arrays, meta, dtype=np.float32, source="the checkpoint"):
    """(model, vocab) from a loaded checkpoint; anything inconsistent is a CharrnnError naming `source`."""
    if "model" not in meta or "vocab" not in meta:
        raise CharrnnError(
            f"{source} has no model configuration or vocabulary, so it was not written by "
            "`charrnn train`; pass a checkpoint from a run directory"
        )
    params = {name[len(PARAM) :]: array for name, array in arrays.items() if name.startswith(PARAM)}
    try:
        config = ModelConfig.from_dict(meta["model"])
        vocab = Vocab.from_dict(meta["vocab"])
        if len(vocab) != config.vocab_size:
            raise CharrnnError(f"its vocabulary has {len(vocab)} symbols but its model expects {config.vocab_size}")
        for name, array in params.items():
            # Anything else would be cast silently (bool, int) or fail deep inside numpy (strings).
            if array.dtype.kind != "f":
                raise CharrnnError(f"parameter {name} is stored as {array.dtype}, not floating point")
            if not np.isfinite(array).all():
                raise CharrnnError(f"parameter {name} holds NaN or infinite values")
        plan = Plan.from_dict(meta["plan"]) if "plan" in meta else None  # older checkpoints: the default
        model = Model(config, params=params, dtype=dtype, plan=plan)
    except CharrnnError as error:
        raise CharrnnError(
            f"{source} is not a usable charrnn checkpoint ({error}); "
            "pick another checkpoint from the run directory or retrain"
        ) from None
    return model, vocab


def load_model(path, which="best", dtype=np.float32):
    """(model, vocab, meta) from a checkpoint file, or a run directory's best/latest checkpoint."""
    path = resolve_checkpoint(path, which)
    arrays, meta = load_checkpoint(path)
    model, vocab = model_from_checkpoint(arrays, meta, dtype, source=path)
    return model, vocab, meta


def load_split_ids(meta, split):
    """The ids of the training corpus's `split` ("train", "val" or "test"), re-read from disk: a prepared
    directory or a text file (through the corpus cache), memory-mapped either way (charrnn.corpus_cache)."""
    from charrnn.corpus_cache import open_corpus

    corpus_meta = meta.get("corpus") if isinstance(meta.get("corpus"), dict) else {}
    path = corpus_meta.get("path")
    if not isinstance(path, str) or not path or not Path(path).exists():
        raise CharrnnError(
            f"the training corpus {path!r} recorded in the checkpoint is not available; pass a text file instead"
        )
    try:
        vocab = Vocab.from_dict(meta["vocab"])
        n_chars = corpus_meta.get("n_chars")
        fractions = float(corpus_meta.get("val_frac", 0.1)), float(corpus_meta.get("test_frac", 0.0))
    except (KeyError, TypeError, ValueError) as error:
        raise CharrnnError(f"the checkpoint's corpus record is malformed ({error}); pass a text file instead") from None
    corpus = open_corpus(path, vocab.mode)
    changed = CharrnnError(f"{path} has changed since training (different size or symbols); pass a text file instead")
    recorded_sha256 = corpus_meta.get("sha256")
    if (n_chars is not None and corpus.n_chars != n_chars) or (recorded_sha256 and recorded_sha256 != corpus.sha256):
        raise changed
    try:
        ids = ids_in_vocab(corpus, vocab)  # a fine-tuned model's vocabulary may be wider than its corpus's
    except CharrnnError:
        raise changed from None
    splits = split_corpus(ids, *fractions)
    if split not in splits:
        raise CharrnnError(f"unknown split {split!r}; choose train, val or test")
    if len(splits[split]) < 2:
        raise CharrnnError(
            f"the {split} split of {path} is empty (it was trained with a {split} fraction of 0); "
            "pass a text file instead"
        )
    return splits[split]


def start_probabilities(meta, vocab_size, note):
    """Character frequencies for starting without a prime, if the checkpoint records usable ones;
    `note(message)` tells the user when they are malformed and the first character is drawn uniformly."""
    unigram = meta.get("unigram")
    if unigram is None:
        return None
    try:
        start_logits(vocab_size, unigram)
    except CharrnnError:
        note("the checkpoint's character frequencies (unigram) are malformed; the first character is drawn uniformly")
        return None
    return unigram


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def checkpoint_summary(path, model, vocab, meta) -> dict:
    """What `charrnn info` shows of a loaded checkpoint, as a flat JSON-able dict; absent metadata
    becomes None."""
    cfg = model.config
    corpus = meta.get("corpus") if isinstance(meta.get("corpus"), dict) else {}
    val_loss, best_val_loss = _number(meta.get("val_loss")), _number(meta.get("best_val_loss"))
    return {
        "checkpoint": str(path),
        "format_version": meta.get("format_version"),
        "cell": cfg.cell,
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "dropout": cfg.dropout,
        "weight_drop": cfg.weight_drop,
        "parameters": int(model.num_parameters),
        "plan": model.plan.to_dict() if "plan" in meta else None,
        "vocab_size": len(vocab),
        "vocab_mode": vocab.mode,
        "vocab": vocab.printable(),
        "iteration": meta.get("iteration"),
        "epoch": _number(meta.get("epoch")),
        "val_loss_nats": val_loss,
        "val_loss_bits": None if val_loss is None else val_loss / math.log(2),
        "best_val_loss_nats": best_val_loss,
        "best_val_loss_bits": None if best_val_loss is None else best_val_loss / math.log(2),
        "train_seconds": _number(meta.get("train_seconds")),
        "corpus": corpus.get("path"),
        "corpus_chars": corpus.get("n_chars"),
    }
