"""The trainer's public face: ``lorsp.train.train(lorsp.train.TrainConfig(...))`` (the CLI: ``lorsp train``).

Everything here is re-exported from the engine package :mod:`lorsp.engine` (one module per job: the config,
sampling, loaders, devices, building the run, label mapping, the LP feature cache, the loop, the run, ...), whose
docstring states what the trainer guarantees (method.md's protocol, Eqs. 10–12, as defaults).
"""
from __future__ import annotations

from .engine import *  # noqa: F401,F403 - the facade: the engine's public API, under its old name
from .engine import __all__  # noqa: F401
