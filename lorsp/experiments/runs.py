"""A run of a chapter's grid and its one key.

A run is a dict: the training config (``backbone``, ``dataset``, ``method``, ``seed``, prompter options such as
``groups``, ``rank``, ``tau``, ``v_threshold`` ...) and ``tags`` (chapter, label, scale: what the book says about
it). :func:`run_config` is its config without the tags; :func:`run_key` is its one identifier, the name of its
folder in a results folder (``results/<scale>/<run key>/``). Tags never enter the key, so the same training run
listed by two chapters is trained once and read once.
"""
from __future__ import annotations

import hashlib
import json

from .methods import label_of

__all__ = ["run_config", "run_key"]


def run_config(run: dict) -> dict:
    """The run's training config: every entry but ``tags``."""
    return {k: v for k, v in run.items() if k != "tags"}


def _canonical(value):
    if isinstance(value, float) and value.is_integer():
        return float(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def run_key(run: dict) -> str:
    """A stable identifier of a run: its label, dataset, backbone, seed and a hash of the whole config.

    Tags do not enter the key, so the same training run listed by two chapters is trained once.
    """
    config = run_config(run)
    blob = json.dumps(_canonical(config), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    label = label_of(config).replace(" ", "").replace("%", "pct").replace("/", "-").lower()
    return f"{config.get('dataset')}-{config.get('backbone')}-{label}-s{config.get('seed')}-{digest}"
