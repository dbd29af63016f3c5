"""What `charrnn tune` searches: a list of train options, each a set of choices, a range or one value.

A space is a list of parameters named by `charrnn train` options (dest form: seq_length, weight_drop).
Each parameter is one of
    {"name": "hidden", "choices": [128, 256]}                  categorical
    {"name": "lr", "low": 1e-3, "high": 1e-2, "log": true}      float range (int range when both ends are ints)
    {"name": "model", "value": "lstm"}                          fixed
with an optional "when": {"lr_schedule": "step"} (or a list of values): the parameter is searched only
when earlier parameters, fixed options or train's defaults have those values. A space file (TOML or
JSON) is a table of such entries keyed by name, in order; a list stands for choices, a scalar for a value.

The default space scales with the corpus and the trial time: the widths kept are those a trial can
train on at least one pass over the corpus (or 1M characters of a larger one), estimated from the
floating-point work per character (charrnn's README: 72 H^2 + 6 H V for a 2-layer LSTM) at a
conservative rate per thread, with at most PARAMETERS_PER_CHAR parameters per training character;
batch and window sizes are those the training split holds several of and a trial makes a few hundred
updates with; step decay starts within the epochs a trial can run; dropout and weight drop reach
their full range only for trials that pass over the corpus often enough to overfit it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from charrnn.errors import CharrnnError
from charrnn.kernels import GATE_BLOCKS

# A conservative training rate for the default space's width limit: charrnn's README measured 86-106
# GFLOP/s on two Zen 3 threads at H=128-256; a shared or older machine does less.
GFLOPS_PER_THREAD = 40.0
# Per-character cost no width removes (loading, softmax bookkeeping, Python per window), seconds.
SECONDS_PER_CHAR_FLOOR = 2e-6
# A trial should see this much text, or the whole training split when that is shorter.
CHARS_PER_TRIAL = 1_000_000
# At most this many parameters per training character: char-rnn's advice is about one, and dropout and
# weight drop let a larger model pay (the README's 60-minute 2x512 recipe has 3.3 per character).
PARAMETERS_PER_CHAR = 4
HIDDEN_CANDIDATES = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
HIDDEN_CHOICES = 4  # the widest feasible ones
BATCH_CANDIDATES = (25, 50, 100)
SEQ_CANDIDATES = (50, 100, 200)
WINDOWS_PER_EPOCH = 4  # the training split must hold at least this many of the largest batch
UPDATES_PER_TRIAL = 300  # a trial of the middle width should make at least this many updates
# Regularization pays only once a model has seen the text often enough to memorize it: a trial of this
# many epochs or more searches dropout and weight drop up to MAX_REGULARIZATION, a shorter one up to its
# share of it (the 3-minute Tiny Shakespeare recipe, at 3 epochs, trains best with none).
REGULARIZATION_EPOCHS = 10.0
MAX_REGULARIZATION = 0.5
# Options a trial's run directory and time are made of: the tune sets them, a space cannot.
TUNE_MANAGED = ("file", "out", "resume", "max_minutes")


def flops_per_char(cell: str, layers: int, hidden: int, vocab: int) -> float:
    """Floating-point operations per training character, forward and backward (2 m k n per product,
    backward twice forward); layer 0's input projection is a row gather, so it costs nothing."""
    gates = GATE_BLOCKS[cell]
    recurrent = sum(6 * gates * hidden * (hidden + (hidden if layer else 0)) for layer in range(layers))
    return recurrent + 6 * hidden * vocab


def parameter_count(cell: str, layers: int, hidden: int, vocab: int) -> int:
    """Weights and biases of a stacked model, as the model counts them (charrnn.cells: each cell's own)."""
    from charrnn.model import ModelConfig, parameter_shapes

    shapes = parameter_shapes(ModelConfig(cell, vocab_size=vocab, hidden=hidden, layers=layers))
    return sum(math.prod(shape) for shape in shapes.values())


def seconds_per_char(cell: str, layers: int, hidden: int, vocab: int, threads: int) -> float:
    return flops_per_char(cell, layers, hidden, vocab) / (GFLOPS_PER_THREAD * 1e9 * threads) + SECONDS_PER_CHAR_FLOOR


def default_space(train_chars: int, vocab: int, trial_seconds: float, threads: int) -> list[dict]:
    """The space `charrnn tune` searches when no --space is given (see the module docstring)."""
    wanted = min(train_chars, CHARS_PER_TRIAL)
    feasible = [
        hidden
        for hidden in HIDDEN_CANDIDATES
        if trial_seconds / seconds_per_char("lstm", 2, hidden, vocab, threads) >= wanted
        and parameter_count("lstm", 2, hidden, vocab) <= PARAMETERS_PER_CHAR * train_chars
    ]
    hidden = (feasible or list(HIDDEN_CANDIDATES[:1]))[-HIDDEN_CHOICES:]
    middle = hidden[len(hidden) // 2]
    trial_chars = trial_seconds / seconds_per_char("lstm", 2, middle, vocab, threads)
    # The largest batch of windows: one the training split holds several of, and small enough that a
    # short trial still makes a few hundred updates.
    largest = min(train_chars / WINDOWS_PER_EPOCH, trial_chars / UPDATES_PER_TRIAL)
    batches, seqs = list(BATCH_CANDIDATES), list(SEQ_CANDIDATES)
    while batches[-1] * seqs[-1] > largest and (len(batches) > 1 or len(seqs) > 1):
        # Drop the larger of the two largest sizes (relative to its list's smallest) first.
        if len(seqs) > 1 and (len(batches) == 1 or seqs[-1] / seqs[0] >= batches[-1] / batches[0]):
            seqs.pop()
        else:
            batches.pop()
    if batches[-1] * seqs[-1] * WINDOWS_PER_EPOCH > train_chars:
        raise CharrnnError(
            f"the training text has {train_chars:,} characters, too few for the default search space "
            f"(at least {batches[0] * seqs[0] * WINDOWS_PER_EPOCH:,}); use a longer corpus or give --space FILE"
        )
    epochs = trial_chars / train_chars
    regularization = round(MAX_REGULARIZATION * min(1.0, epochs / REGULARIZATION_EPOCHS), 2)
    return [
        {"name": "model", "choices": ["lstm", "gru"]},
        {"name": "layers", "low": 1, "high": 3},
        {"name": "hidden", "choices": hidden},
        *(
            {"name": name, "low": 0.0, "high": regularization}
            if regularization >= 0.05
            else {"name": name, "value": 0.0}
            for name in ("dropout", "weight_drop")
        ),
        {"name": "lr", "low": 1e-3, "high": 1e-2, "log": True},
        {"name": "lr_schedule", "choices": ["cosine", "step"]},
        {"name": "lr_decay", "low": 0.5, "high": 1.0, "when": {"lr_schedule": ["step"]}},
        # Decay that starts after the trial ends would never be tried.
        {
            "name": "lr_decay_after",
            "low": 0.0,
            "high": round(max(1.0, min(epochs, 50.0)), 1),
            "when": {"lr_schedule": ["step"]},
        },
        {"name": "batch_size", "choices": batches},
        {"name": "seq_length", "choices": seqs},
    ]


def read_space_file(path) -> list[dict]:
    """A --space file (TOML, or JSON for a .json name) as a space; CharrnnError naming the file and entry."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CharrnnError(f"cannot read the space file {path}: {error.strerror or error}") from None
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(raw.decode("utf-8"))
        else:
            table = _toml_loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CharrnnError(f"the space file {path} is not UTF-8 text") from None
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise CharrnnError(f"the space file {path} is not valid {kind}: {error}") from None
    if isinstance(table, list):  # the list form the study directory's space.json is written in
        return check_space(table, str(path))
    if not isinstance(table, dict) or not table:
        raise CharrnnError(f"the space file {path} holds no parameters; see 'charrnn tune --help' for its layout")
    entries = []
    for name, entry in table.items():
        if isinstance(entry, dict):
            entries.append({"name": name, **entry})
        elif isinstance(entry, list):
            entries.append({"name": name, "choices": entry})
        else:
            entries.append({"name": name, "value": entry})
    return check_space(entries, str(path))


def _toml_loads(text):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the tune extra brings tomli
        import tomli as tomllib
    return tomllib.loads(text)


def check_space(entries, source: str) -> list[dict]:
    """Checks the shape of every entry (names and values are checked against `charrnn train` later)."""
    space, seen = [], set()
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CharrnnError(f"{source}: every parameter needs a name, got {entry!r}")
        name = entry["name"].replace("-", "_")
        where = f"{source}: {entry['name']}"
        if name in seen:
            raise CharrnnError(f"{where} is given twice")
        seen.add(name)
        keys = set(entry) - {"name", "when"}
        if keys == {"value"}:
            param = {"name": name, "value": entry["value"]}
        elif keys == {"choices"}:
            choices = entry["choices"]
            if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
                raise CharrnnError(f"{where}: choices must be a non-empty list of values, got {choices!r}")
            param = {"name": name, "choices": choices}
        elif {"low", "high"} <= keys <= {"low", "high", "log", "step", "int"}:  # int: as stored, recomputed
            param = {"name": name, **_checked_range(entry, where)}
        else:
            raise CharrnnError(
                f"{where}: give choices = [...], low and high (with optional log, step), or value; got {sorted(keys)}"
            )
        if "when" in entry:
            param["when"] = _checked_condition(entry["when"], where)
        space.append(param)
    if not space:
        raise CharrnnError(f"{source}: the space holds no parameters")
    return space


def _checked_range(entry, where):
    low, high, log, step = entry["low"], entry["high"], entry.get("log", False), entry.get("step")
    for label, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CharrnnError(f"{where}: {label} must be a number, got {value!r}")
    if not isinstance(log, bool):
        raise CharrnnError(f"{where}: log must be true or false, got {log!r}")
    if low >= high:
        raise CharrnnError(f"{where}: low {low} must be below high {high}")
    if log and low <= 0:
        raise CharrnnError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise CharrnnError(f"{where}: step must be positive and cannot go with log, got step {step}")
    integer = all(isinstance(v, int) for v in (low, high) + ((step,) if step is not None else ()))
    param = {"low": low, "high": high, "log": log, "int": integer}
    if step is not None:
        param["step"] = step
    return param


def _checked_condition(condition, where):
    if not isinstance(condition, dict) or not condition:
        raise CharrnnError(f"{where}: when must be a table of option = value(s), got {condition!r}")
    checked = {}
    for name, values in condition.items():
        values = values if isinstance(values, list) else [values]
        checked[name.replace("-", "_")] = values
    return checked


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def format_value(value) -> str:
    """A value as a train command-line argument; floats to 4 significant digits (what the trial runs)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe_space(space: list[dict]) -> str:
    """One line: 'model lstm|gru, layers 1-3, lr 0.001-0.01 (log), ...'."""
    parts = []
    for param in space:
        if "value" in param:
            text = f"{param['name']} {param['value']}"
        elif "choices" in param:
            text = f"{param['name']} " + "|".join(str(c) for c in param["choices"])
        else:
            text = f"{param['name']} {param['low']:g}-{param['high']:g}" + (" (log)" if param.get("log") else "")
        if "when" in param:
            text += " if " + " and ".join(
                f"{key}={'|'.join(map(str, values if isinstance(values, list) else [values]))}"
                for key, values in param["when"].items()
            )
        parts.append(text)
    return ", ".join(parts)


def describe_options(options: dict) -> str:
    """'lstm 2x256 dropout 0.25 lr 0.003 ...': a trial's searched options, for a line of output."""
    shown = {name: value for name, value in options.items() if name not in ("eval_every", "keep_last", "min_lr")}
    head = ""
    if {"model", "layers", "hidden"} <= set(shown):
        head = f"{shown.pop('model')} {shown.pop('layers')}x{shown.pop('hidden')} "
    return (head + " ".join(f"{name} {format_value(value)}" for name, value in shown.items())).strip()


def values_to_check(param) -> list:
    """The values of a parameter worth showing to train's option parser: all choices, or both ends."""
    if "value" in param:
        return [param["value"]]
    if "choices" in param:
        return list(param["choices"])
    return [param["low"], param["high"]]


def baseline(space: list[dict], fixed: dict, defaults: dict) -> dict:
    """The first trial of a new study: train's defaults, each moved to the nearest value the space holds,
    so the search starts from the model `charrnn train` would make rather than from a random point."""
    params = {}
    for param in space:
        name = param["name"]
        if name in fixed or "value" in param or name not in defaults:
            continue
        default = defaults[name]
        if "choices" in param:
            numeric = isinstance(default, (int, float)) and all(isinstance(c, (int, float)) for c in param["choices"])
            if default in param["choices"]:
                params[name] = default
            elif numeric:
                params[name] = min(param["choices"], key=lambda choice: abs(choice - default))
            else:
                params[name] = param["choices"][0]
        else:
            value = min(max(default, param["low"]), param["high"])
            params[name] = int(round(value)) if param.get("int") else float(value)
    return params


def suggest(trial, space: list[dict], fixed: dict, defaults: dict) -> dict:
    """The train options of one trial: {name: value} for the space's parameters not fixed by the user.

    `trial` is an optuna.Trial; `fixed` the options given after `--`; `defaults` train's own defaults,
    which `when` conditions fall back on.
    """
    chosen = {}
    for param in space:
        name = param["name"]
        if name in fixed:
            continue
        if "when" in param:
            known = {**defaults, **chosen, **fixed}
            if not all(known.get(key) in values for key, values in param["when"].items()):
                continue
        if "value" in param:
            chosen[name] = param["value"]
        elif "choices" in param:
            chosen[name] = trial.suggest_categorical(name, param["choices"])
        elif param.get("int"):
            chosen[name] = trial.suggest_int(
                name, param["low"], param["high"], step=param.get("step", 1), log=param.get("log", False)
            )
        else:
            chosen[name] = trial.suggest_float(
                name, float(param["low"]), float(param["high"]), step=param.get("step"), log=param.get("log", False)
            )
    return chosen
