"""Typed arguments of the ``lorsp`` command line: integers and numbers within a range (the error names the
flag — argparse adds it — and the range), ``KEY=VALUE`` options, the prompter options every command that
builds a prompter accepts (:data:`PROMPTER_FLAGS`), and the flags of a config's fields made from their
:class:`~lorsp.engine.fields.FieldSpec` (:func:`add_config_arguments`, :func:`config_values`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math

from .engine.fields import FieldSpec, field_spec
from .lif import DEFAULT_TAU, DEFAULT_V_RESET, DEFAULT_V_THRESHOLD
from .prompters.factors import DEFAULT_GROUPS, DEFAULT_RANK

__all__ = ["int_range", "float_range", "v_reset_value", "key_value", "PROMPTER_FLAGS", "config_flag",
           "add_config_arguments", "config_values"]


def int_range(low=None, high=None):
    """An argparse ``type``: an integer in [``low``, ``high``] (either bound may be None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer{_range_text(low, high)}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer{_range_text(low, high)}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def float_range(low=None, high=None, low_open=False, high_open=False):
    """An argparse ``type``: a finite number between ``low`` and ``high`` (either may be None; ``low_open``,
    ``high_open``: the bound itself excluded)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
            interval = f" in {lo or '(-inf'}, {hi or 'inf)'}"
            raise argparse.ArgumentTypeError(f"must be a finite number{interval}, got {text!r}")
        return value
    parse.__name__ = "number"
    return parse


def _range_text(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def v_reset_value(text: str):
    """``--v-reset``: a number, or ``none``/``soft`` (None: the soft reset)."""
    if text.lower() in ("none", "soft"):
        return None
    return float_range()(text)


def key_value(text: str):
    """``KEY=VALUE`` → ``(key, value)``, the value read as JSON when it parses, dashes in the key as underscores."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE (VALUE read as JSON when it parses), got {text!r}")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return key.strip().replace("-", "_"), value


# Prompter options passed through to lorsp.build_prompter (only those given on the command line).
PROMPTER_FLAGS = {
    "groups": (int_range(1, 4096), f"number of prompt factors G (Eqs. 4-5; LoRSP default {DEFAULT_GROUPS})"),
    "rank": (int_range(1, 4096), f"rank r of each factor (Eqs. 4-5; default {DEFAULT_RANK})"),
    "tau": (float_range(1, None, low_open=True), f"LIF leak factor tau > 1 (Eq. 1; default {DEFAULT_TAU})"),
    "v_threshold": (float_range(), f"LIF firing threshold V_th (Eq. 2; default {DEFAULT_V_THRESHOLD})"),
    "v_reset": (v_reset_value,
                f"LIF reset potential V_reset (Eq. 3; default {DEFAULT_V_RESET}); 'none' = soft reset"),
    "surrogate_alpha": (float_range(0, None, low_open=True), "slope of the sigmoid surrogate gradient (> 0)"),
    "init_std": (float_range(0, None), "std of P's Gaussian init (>= 0)"),
    "keep_ratio": (float_range(0, 1, low_open=True), "share of prompt entries kept by topk/dropout, in (0, 1]"),
    "threshold": (float_range(0, None), "|delta| threshold of the 'threshold' sparsifier (>= 0)"),
    "inner_size": (int_range(1, 4096), "inner image size of padding prompts (ILM-VP/AutoVP/EVP)"),
    "pad_size": (int_range(1, 4096), "padding width of padding prompts"),
    "num_tokens": (int_range(1, 4096), "number of prompt tokens (VPT)"),
}


# ---------------------------------------------------------------------------------------------------------
# a config's fields as flags
# ---------------------------------------------------------------------------------------------------------
def config_flag(name: str, spec: FieldSpec, default) -> str:
    """The flag of config field ``name``: ``spec.flag_name``, else ``--field-name`` (``--no-field-name`` for a
    switch that is on by default)."""
    if spec.flag_name:
        return spec.flag_name
    flag = name.replace("_", "-")
    return f"--no-{flag}" if spec.kind == "bool" and default is True else f"--{flag}"


def _argument_options(spec: FieldSpec, default) -> dict:
    """``add_argument``'s keywords for a field: its type (a range from low, high and flag_high), choices,
    default, help and metavar."""
    options = {"help": spec.help}
    if spec.kind == "bool":
        options["action"] = "store_false" if default is True else "store_true"
        return options
    options["default"] = default
    high = spec.flag_high if spec.flag_high is not None else spec.high
    if spec.kind == "int":
        options["type"] = int_range(spec.low, high)
    elif spec.kind == "number":
        options["type"] = float_range(spec.low, high, low_open=spec.low_open, high_open=spec.high_open)
    elif spec.kind == "choice":
        options["choices"] = list(spec.choices)
    elif spec.kind == "dict":
        raise ValueError("a dict field has no flag of its own: declare it with flag=False")
    if spec.metavar:
        options["metavar"] = spec.metavar
    return options


def _flagged_fields(config_class):
    return [(f, field_spec(f)) for f in dataclasses.fields(config_class) if field_spec(f).flag]


def add_config_arguments(groups: dict, config_class) -> None:
    """Add a flag for each field of ``config_class`` declared with ``flag=True``, in field order, to
    ``groups[spec.group]`` (argparse argument groups by key); its dest is the field's name."""
    for f, spec in _flagged_fields(config_class):
        if spec.group not in groups:
            raise ValueError(f"{config_class.__name__}.{f.name}: no argument group {spec.group!r} "
                             f"(known: {sorted(groups)})")
        groups[spec.group].add_argument(config_flag(f.name, spec, f.default), dest=f.name,
                                        **_argument_options(spec, f.default))


def config_values(args: argparse.Namespace, config_class) -> dict:
    """``{field: value}`` of the fields of ``config_class`` that have a flag, read from parsed ``args``."""
    return {f.name: getattr(args, f.name) for f, _ in _flagged_fields(config_class)}
