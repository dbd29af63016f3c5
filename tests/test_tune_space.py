"""The search space of `charrnn tune`: the default's scaling, space files, conditions, suggestions."""

import json

import pytest

from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig
from charrnn.tune_space import (
    check_space,
    default_space,
    describe_options,
    flops_per_char,
    format_value,
    parameter_count,
    read_space_file,
    suggest,
)

SHAKESPEARE_TRAIN, SHAKESPEARE_VOCAB = 1_003_854, 65


def entry(space, name):
    return next(param for param in space if param["name"] == name)


def test_work_and_size_per_character_match_the_readme():
    for hidden in (128, 256, 512):
        assert flops_per_char("lstm", 2, hidden, 65) == 72 * hidden**2 + 6 * hidden * 65
    for cell in ("lstm", "gru", "rnn", "lnlstm"):  # what the model itself holds, a cell's own parameters included
        model = Model(ModelConfig(cell, vocab_size=65, hidden=32, layers=2))
        assert parameter_count(cell, 2, 32, 65) == model.num_parameters


def test_longer_trials_search_wider_models():
    widths = [
        entry(default_space(SHAKESPEARE_TRAIN, SHAKESPEARE_VOCAB, minutes * 60, 2), "hidden")["choices"]
        for minutes in (1, 3, 10)
    ]
    assert max(widths[0]) < max(widths[1]) < max(widths[2])
    assert all(choices == sorted(choices) and len(choices) >= 2 for choices in widths)
    # One thread a trial (two workers on two cores) trains less in the same time: narrower.
    assert max(entry(default_space(SHAKESPEARE_TRAIN, SHAKESPEARE_VOCAB, 180, 1), "hidden")["choices"]) < max(widths[1])


def test_a_small_corpus_gets_small_models_and_batches():
    small = default_space(18_000, 28, 180, 2)
    large = default_space(SHAKESPEARE_TRAIN, SHAKESPEARE_VOCAB, 180, 2)
    assert max(entry(small, "hidden")["choices"]) < max(entry(large, "hidden")["choices"])
    for name in ("batch_size", "seq_length"):
        assert max(entry(small, name)["choices"]) <= max(entry(large, name)["choices"])
    batch, seq = max(entry(small, "batch_size")["choices"]), max(entry(small, "seq_length")["choices"])
    assert 4 * batch * seq <= 18_000  # the training split holds several of the largest batch
    # Step decay is searched only where a trial can reach it.
    assert entry(small, "lr_decay_after")["when"] == {"lr_schedule": ["step"]}
    assert entry(large, "lr_decay_after")["high"] < entry(small, "lr_decay_after")["high"]


def test_a_corpus_too_short_for_any_batch_is_refused():
    with pytest.raises(CharrnnError, match="too few for the default search space"):
        default_space(3_000, 20, 60, 2)


def test_toml_and_json_space_files_read_alike(tmp_path):
    toml = tmp_path / "space.toml"
    toml.write_text(
        'model = "lstm"\nhidden = [128, 256]\n[lr]\nlow = 1e-3\nhigh = 1e-2\nlog = true\n'
        '[layers]\nlow = 1\nhigh = 3\n[lr-decay]\nlow = 0.8\nhigh = 1.0\nwhen = { lr_schedule = "step" }\n',
        encoding="utf-8",
    )
    table = {
        "model": "lstm",
        "hidden": [128, 256],
        "lr": {"low": 1e-3, "high": 1e-2, "log": True},
        "layers": {"low": 1, "high": 3},
        "lr-decay": {"low": 0.8, "high": 1.0, "when": {"lr_schedule": "step"}},
    }
    (tmp_path / "space.json").write_text(json.dumps(table), encoding="utf-8")
    space = read_space_file(toml)
    assert space == read_space_file(tmp_path / "space.json")
    assert space[0] == {"name": "model", "value": "lstm"}
    assert space[1] == {"name": "hidden", "choices": [128, 256]}
    assert entry(space, "layers")["int"] and not entry(space, "lr")["int"]
    assert entry(space, "lr_decay")["when"] == {"lr_schedule": ["step"]}
    # The list form the study directory keeps (space.json) reads back as the same space.
    (tmp_path / "kept.json").write_text(json.dumps(space), encoding="utf-8")
    assert read_space_file(tmp_path / "kept.json") == space


@pytest.mark.parametrize(
    "entries, phrase",
    [
        ([{"name": "lr", "low": 0.0, "high": 0.1, "log": True}], "a log range needs low > 0"),
        ([{"name": "hidden", "choices": []}], "choices must be a non-empty list"),
        ([{"name": "hidden", "values": [1]}], "give choices = [...], low and high"),
        ([{"name": "lr", "low": "small", "high": 0.1}], "low must be a number"),
        ([{"name": "hidden", "value": 8}, {"name": "hidden", "value": 9}], "is given twice"),
        ([{"name": "lr_decay", "low": 0.5, "high": 1.0, "when": "step"}], "when must be a table"),
    ],
)
def test_malformed_entries_are_named(entries, phrase):
    with pytest.raises(CharrnnError, match="space.toml: ") as caught:
        check_space(entries, "space.toml")
    assert phrase in str(caught.value)


def test_suggest_follows_conditions_fixed_options_and_defaults():
    optuna = pytest.importorskip("optuna", reason="charrnn tune needs the tune extra: pip install -e '.[tune]'")
    space = check_space(
        [
            {"name": "lr_schedule", "choices": ["cosine", "step"]},
            {"name": "lr_decay", "low": 0.5, "high": 1.0, "when": {"lr_schedule": "step"}},
            {"name": "hidden", "choices": [64, 128]},
            {"name": "layers", "low": 1, "high": 3},
            {"name": "weight_drop", "value": 0.25},
        ],
        "test",
    )
    defaults = {"lr_schedule": "step", "hidden": 128, "layers": 2}
    stepped = suggest(optuna.trial.FixedTrial({"lr_schedule": "step", "lr_decay": 0.9, "hidden": 64, "layers": 3}),
                      space, {}, defaults)  # fmt: skip
    assert stepped == {"lr_schedule": "step", "lr_decay": 0.9, "hidden": 64, "layers": 3, "weight_drop": 0.25}
    cosine = suggest(optuna.trial.FixedTrial({"lr_schedule": "cosine", "hidden": 64, "layers": 1}), space, {}, defaults)
    assert "lr_decay" not in cosine
    # A fixed option is neither searched nor suggested, and conditions read it.
    fixed = suggest(optuna.trial.FixedTrial({"lr_decay": 0.7, "hidden": 128, "layers": 2}), space,
                    {"lr_schedule": "step"}, defaults)  # fmt: skip
    assert fixed == {"lr_decay": 0.7, "hidden": 128, "layers": 2, "weight_drop": 0.25}
    assert isinstance(fixed["layers"], int)


def test_values_on_the_command_line():
    assert format_value(0.0031234567) == "0.003123" and format_value(256) == "256" and format_value("gru") == "gru"
    options = {"model": "gru", "layers": 2, "hidden": 256, "dropout": 0.25, "eval_every": 40, "min_lr": 1e-4}
    assert describe_options(options) == "gru 2x256 dropout 0.25"


def test_regularization_is_searched_as_far_as_a_trial_can_overfit():
    def high(space, name):
        param = entry(space, name)
        return param.get("high", param.get("value"))

    short = default_space(SHAKESPEARE_TRAIN, SHAKESPEARE_VOCAB, 180, 2)  # about 3 epochs
    long = default_space(SHAKESPEARE_TRAIN, SHAKESPEARE_VOCAB, 3600, 2)
    small = default_space(18_000, 28, 180, 2)  # hundreds of epochs
    for name in ("dropout", "weight_drop"):
        assert 0.05 <= high(short, name) < high(long, name) == 0.5
        assert high(small, name) == 0.5
    # A trial that sees less than half an epoch cannot overfit: no regularization is searched.
    huge = default_space(100_000_000, SHAKESPEARE_VOCAB, 60, 2)
    assert entry(huge, "dropout") == {"name": "dropout", "value": 0.0}
