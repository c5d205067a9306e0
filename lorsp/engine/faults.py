"""Fault injection, the test hooks of :attr:`TrainConfig.fault_injection` and ``LORSP_FAULT_INJECTION``."""
from __future__ import annotations

import json
import os
from typing import Any

from .config import TrainConfig


def read_fault_injection(config: TrainConfig) -> dict[str, Any]:
    """The fault injection in effect: ``config.fault_injection`` updated by ``LORSP_FAULT_INJECTION`` (JSON); an
    unknown key or bad JSON is a ValueError naming it."""
    faults = dict(config.fault_injection or {})
    env = os.environ.get("LORSP_FAULT_INJECTION")
    if env:
        try:
            faults.update(json.loads(env))
        except json.JSONDecodeError as error:
            raise ValueError(f"LORSP_FAULT_INJECTION must be a JSON object, got {env!r}: {error}") from None
    known = {"nonfinite_loss_at", "sleep_per_batch", "raise_after_epoch"}
    unknown = set(faults) - known
    if unknown:
        raise ValueError(f"unknown fault_injection keys {sorted(unknown)}; known: {sorted(known)}")
    return faults


class InjectedFault(RuntimeError):
    """Raised by the ``raise_after_epoch`` fault injection (a simulated interruption)."""
