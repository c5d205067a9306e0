"""TrainConfig's fields declare their allowed values and help text once (lorsp.engine.fields.spec):
validation and the ``lorsp train`` flags are made from them, and what a config records stays the same."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from lorsp import cli
from lorsp.cli_types import config_flag
from lorsp.engine import TrainConfig
from lorsp.engine.fields import FieldSpec, field_specs, spec

SPECS = field_specs(TrainConfig)
DEFAULTS = {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(TrainConfig)}
FLAGGED = [name for name, s in SPECS.items() if s.flag]
NUMERIC = [name for name, s in SPECS.items() if s.kind in ("int", "number")]

# The records of every run hold these fields, in this order, with these defaults (method.md's protocol):
# a change here changes what runs record and train.
EXPECTED_DEFAULTS = [
    ("backbone", "mobilenetv2"), ("dataset", "synthetic"), ("method", "lorsp"), ("head", "linear"),
    ("epochs", 20), ("batch_size", 256), ("lr", 0.01), ("prompt_lr", None), ("momentum", 0.9),
    ("weight_decay", 0.0001), ("schedule", "cosine"), ("image_size", 224), ("train_per_class", None),
    ("test_per_class", None), ("val_per_class", None), ("seed", 0), ("device", "auto"), ("weights", None),
    ("random_init", False), ("deterministic", False), ("output", None), ("resume", False),
    ("prompter_kwargs", {}), ("backbone_kwargs", {}), ("num_workers", 0), ("loader", "auto"), ("amp", "auto"),
    ("channels_last", True), ("bad_image_policy", "error"), ("label_mapping_interval", 1),
    ("max_grad_norm", None), ("eval_every", 1), ("eval_batch_size", None), ("max_steps", None),
    ("trace_steps", 32), ("cache_features", "auto"), ("feature_cache_dir", None), ("data_root", None),
    ("download", False), ("results_dir", None), ("fault_injection", None),
]


# -- what a config records -------------------------------------------------------------------------------
def test_asdict_and_to_dict_keep_the_field_names_order_defaults_and_types():
    expected = dict(EXPECTED_DEFAULTS)
    as_dict = dataclasses.asdict(TrainConfig())
    assert list(as_dict.items()) == EXPECTED_DEFAULTS
    assert {k: type(v) for k, v in as_dict.items()} == {k: type(v) for k, v in expected.items()}
    assert json.dumps(TrainConfig().to_dict()) == json.dumps(expected)  # byte for byte, in order


def test_dict_defaults_are_fresh_per_config():
    first, second = TrainConfig(), TrainConfig()
    first.prompter_kwargs["tau"] = 2.0
    assert second.prompter_kwargs == {} and TrainConfig().backbone_kwargs == {}


# -- one declaration per field ---------------------------------------------------------------------------
def test_every_field_has_a_spec_with_help_text():
    assert list(SPECS) == [name for name, _ in EXPECTED_DEFAULTS]
    for name, field_spec in SPECS.items():
        assert isinstance(field_spec, FieldSpec)
        assert len(field_spec.help) >= 10, f"TrainConfig.{name}: help text too short: {field_spec.help!r}"
        assert field_spec.accepts(DEFAULTS[name]), f"TrainConfig.{name}: its default {DEFAULTS[name]!r} is refused"


BAD_BY_KIND = {"int": 1.5, "number": "x", "str": "", "choice": "no-such-option", "bool": "yes", "dict": [],
               "path": 3}


@pytest.mark.parametrize("name", list(SPECS))
def test_every_field_is_checked_and_its_error_names_it(name):
    bad = BAD_BY_KIND[SPECS[name].kind]
    with pytest.raises(ValueError) as info:
        TrainConfig(**{name: bad}).validate()
    assert str(info.value) == f"TrainConfig.{name} must be {SPECS[name].expected()}, got {bad!r}"


def _out_of_range(field_spec: FieldSpec) -> list:
    """Values just outside the field's range, and values of the wrong type."""
    step = 1 if field_spec.kind == "int" else 1e-9
    values = ["3", True, float("nan")]
    if field_spec.low is not None:
        values.append(field_spec.low if field_spec.low_open else field_spec.low - step)
    if field_spec.high is not None:
        values.append(field_spec.high if field_spec.high_open else field_spec.high + step)
    if field_spec.kind == "int":
        values.append(2.0)  # a float, even a whole one, is no integer
    return values


@pytest.mark.parametrize("name", NUMERIC)
def test_a_bad_value_of_each_numeric_field_is_a_value_error_naming_it(name):
    for bad in _out_of_range(SPECS[name]):
        with pytest.raises(ValueError, match=rf"^TrainConfig\.{name} must be ") as info:
            TrainConfig(**{name: bad}).validate()
        assert SPECS[name].expected() in str(info.value)


@pytest.mark.parametrize("name", NUMERIC)
def test_the_bounds_of_each_numeric_field_are_allowed_where_closed(name):
    field_spec = SPECS[name]
    for bound, is_open in ((field_spec.low, field_spec.low_open), (field_spec.high, field_spec.high_open)):
        if bound is not None and not is_open:
            TrainConfig(**{name: bound}).validate()


def test_the_messages_tests_and_users_rely_on():
    assert SPECS["epochs"].expected() == "an integer >= 1"
    assert SPECS["seed"].expected() == "an integer in [0, 2**31)"
    assert SPECS["lr"].expected() == "a number in (0, 100]"
    assert SPECS["momentum"].expected() == "a number in [0, 1)"
    assert SPECS["max_grad_norm"].expected() == "None or a number > 0"
    assert SPECS["train_per_class"].expected() == "None (all images) or an integer >= 1"
    assert SPECS["schedule"].expected() == "one of ['cosine', 'constant']"
    assert SPECS["prompter_kwargs"].expected() == "a dict of keyword arguments"


def test_field_spec_refuses_an_unknown_kind_or_missing_help():
    with pytest.raises(ValueError, match="kind"):
        FieldSpec(kind="float", help="a number")
    with pytest.raises(ValueError, match="help"):
        FieldSpec(kind="int", help="")
    with pytest.raises(ValueError, match="choices"):
        spec("a", kind="choice", help="an option")
    with pytest.raises(ValueError, match="closed"):
        FieldSpec(kind="int", help="a count", low=0, low_open=True)
    assert FieldSpec(kind="int", help="a size", low=1, high=8).expected() == "an integer >= 1 and <= 8"
    assert FieldSpec(kind="int", help="a size", high=8, optional=True).expected() == "None or an integer <= 8"


# -- the command line ------------------------------------------------------------------------------------
def _train_help(capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    return capsys.readouterr().out


def test_train_help_lists_a_flag_with_the_help_text_of_each_flagged_field(capsys):
    text = " ".join(_train_help(capsys).split())
    for name in FLAGGED:
        flag = config_flag(name, SPECS[name], DEFAULTS[name])
        assert f" {flag} " in text, f"lorsp train --help lacks {flag} (TrainConfig.{name})"
        assert " ".join(SPECS[name].help.split()) in text, name


def test_fields_without_a_flag_are_the_dicts_and_the_validation_split():
    assert sorted(set(SPECS) - set(FLAGGED)) == ["backbone_kwargs", "fault_injection", "prompter_kwargs",
                                                  "val_per_class"]


def test_parsed_defaults_are_the_config_defaults():
    args = cli.build_parser().parse_args(["train"])
    for name in FLAGGED:
        assert getattr(args, name) == DEFAULTS[name], name


@pytest.mark.parametrize("name", [n for n in NUMERIC if SPECS[n].flag])
def test_an_out_of_range_flag_value_is_an_argparse_error_naming_the_flag(name, capsys):
    field_spec = SPECS[name]
    flag = config_flag(name, field_spec, DEFAULTS[name])
    bad = field_spec.low - (0 if field_spec.low_open else 1)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", flag, str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "must be" in err and str(bad) in err


@pytest.mark.parametrize("name", [n for n in NUMERIC if SPECS[n].flag])
def test_what_a_flag_accepts_the_config_accepts(name):
    field_spec = SPECS[name]
    flag = config_flag(name, field_spec, DEFAULTS[name])
    edge = field_spec.low  # the smallest value allowed
    if field_spec.low_open:
        edge = edge + 1 if field_spec.kind == "int" else math.nextafter(edge, math.inf)
    argv = ["train", flag, repr(edge), "--output", "x"]
    config = cli.config_from_args(cli.build_parser().parse_args(argv)).validate()
    assert getattr(config, name) == edge


def test_config_from_args_fills_every_flagged_field_from_its_flag():
    argv = ["train", "--epochs", "3", "--lr", "0.5", "--bad-images", "skip", "--no-channels-last", "--resume",
            "--output", "runs/x", "--eval-every", "2", "--backbone-option", "img_size=32", "--tau", "2.5"]
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert (config.epochs, config.lr, config.bad_image_policy, config.channels_last, config.resume,
            config.output, config.eval_every) == (3, 0.5, "skip", False, True, "runs/x", 2)
    assert config.backbone_kwargs == {"img_size": 32} and config.prompter_kwargs == {"tau": 2.5}
    assert config.val_per_class is None and config.fault_injection is None
