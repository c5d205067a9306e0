"""Config fields that carry their allowed values and help text once: :func:`spec` declares a dataclass field
with a :class:`FieldSpec` in its metadata, from which :meth:`lorsp.engine.TrainConfig.validate` checks the
value and ``lorsp train`` builds the field's flag (:func:`lorsp.cli_types.add_config_arguments`).

Metadata does not enter :func:`dataclasses.asdict`: a config's records are those of plain fields.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["FieldSpec", "spec", "field_spec", "field_specs", "KINDS"]

SPEC_KEY = "lorsp.spec"

# kind → the phrase of the error message ("TrainConfig.X must be <phrase>, got ...") before the range
KINDS = {"int": "an integer", "number": "a number", "str": "a non-empty string", "choice": "one of",
         "bool": "True or False", "dict": "a dict", "path": "a path"}


@dataclass(frozen=True)
class FieldSpec:
    """The allowed values and the help text of one config field.

    ``kind``: one of :data:`KINDS`. ``low``/``high``: the allowed range of an ``int`` or ``number``
    (``low_open``/``high_open``: the bound itself excluded). ``choices``: the values of a ``choice``.
    ``optional``: None is allowed too; ``optional_means`` says what None does. ``what``: the phrase of the
    error message instead of the one made from ``kind`` and the range; ``note``: a parenthesis after it.
    ``flag``: ``lorsp train`` has a flag for the field; ``flag_name`` (default ``--field-name``; a bool whose
    default is True gets a ``--no-...`` flag that stores False), ``flag_high`` (the command line's upper bound
    where it is stricter than ``high``), ``metavar`` and ``group`` (the ``--help`` section) shape it.
    """

    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False
    optional_means: str | None = None
    what: str | None = None
    note: str | None = None
    flag: bool = True
    flag_name: str | None = None
    flag_high: float | None = None
    metavar: str | None = None
    group: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"FieldSpec.kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError("FieldSpec.kind='choice' needs choices")
        if not self.help:
            raise ValueError("FieldSpec.help must be a non-empty text")
        if self.kind == "int" and (self.low_open or self.high_open):
            raise ValueError("FieldSpec: an int field's bounds are closed (give low + 1 or high - 1 instead)")

    def expected(self) -> str:
        """What the field must be, as the error message says it."""
        phrase = self.what or self._phrase()
        if self.optional:
            phrase = "None" + (f" ({self.optional_means})" if self.optional_means else "") + f" or {phrase}"
        return phrase + (f" ({self.note})" if self.note else "")

    def _phrase(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        if self.kind == "int":
            text = KINDS["int"] + (f" >= {self.low}" if self.low is not None else "")
            if self.high is not None:
                text += (" and" if self.low is not None else "") + f" <= {self.high}"
            return text
        if self.kind == "number":
            return KINDS["number"] + self._interval()
        return KINDS[self.kind]

    def _interval(self) -> str:
        if self.low is not None and self.high is not None:
            return (f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is an allowed value of the field."""
        if value is None:
            return self.optional
        if self.kind == "int":
            return _is_int(value) and self._in_range(value)
        if self.kind == "number":
            return _is_number(value) and self._in_range(value)
        if self.kind == "str":
            return isinstance(value, str) and bool(value)
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "dict":
            return isinstance(value, dict)
        return isinstance(value, (str, os.PathLike))  # path

    def _in_range(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or not (value >= self.high if self.high_open else value > self.high)


def spec(default: Any = dataclasses.MISSING, *, kind: str, help: str, **options) -> Any:
    """A dataclass field with ``default`` (a dict default is copied for each instance) whose metadata holds
    its :class:`FieldSpec` (``kind``, ``help`` and the ``options`` of FieldSpec)."""
    metadata = {SPEC_KEY: FieldSpec(kind=kind, help=help, **options)}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_spec(field: dataclasses.Field) -> FieldSpec:
    """The :class:`FieldSpec` of a dataclass field (a ValueError naming the field when it has none)."""
    try:
        return field.metadata[SPEC_KEY]
    except KeyError:
        raise ValueError(f"field {field.name!r} was not declared with lorsp.engine.fields.spec") from None


def field_specs(config_class) -> dict[str, FieldSpec]:
    """``{field name: FieldSpec}`` of a dataclass declared with :func:`spec`, in field order."""
    return {f.name: field_spec(f) for f in dataclasses.fields(config_class)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
