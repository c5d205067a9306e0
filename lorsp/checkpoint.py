"""Atomic, resumable training checkpoints (one file per run directory, replaced each epoch).

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then moved over the
previous one with :func:`os.replace` (atomic on POSIX and Windows). A process killed at any moment leaves
either the previous complete checkpoint or the new complete one — never a half-written file.

It holds what the trainer needs to continue exactly where it stopped: the model's trainable state (the
prompter and head, not the frozen backbone), the optimizer and scheduler states, the last finished epoch,
the RNG states (python, numpy, torch, CUDA) and the metrics so far.
"""
from __future__ import annotations

import io
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKPOINT_NAME", "checkpoint_path", "save_checkpoint", "load_checkpoint", "atomic_write_bytes",
           "rng_state", "set_rng_state"]

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run_dir) -> Path:
    """The checkpoint file of a run directory."""
    return Path(run_dir) / CHECKPOINT_NAME


def _fault_sleep_in_write() -> float:
    """Seconds to pause between writing the temporary file and replacing the checkpoint.

    Set by ``LORSP_FAULT_CHECKPOINT_SLEEP`` (seconds); a test hook that lets a SIGKILL land *during* a
    checkpoint write. 0 (no pause) unless set.
    """
    try:
        return max(0.0, float(os.environ.get("LORSP_FAULT_CHECKPOINT_SLEEP", "0") or 0))
    except ValueError:
        raise ValueError("LORSP_FAULT_CHECKPOINT_SLEEP must be a number of seconds, got "
                         f"{os.environ['LORSP_FAULT_CHECKPOINT_SLEEP']!r}") from None


def atomic_write_bytes(path, data: bytes, pause: float = 0.0) -> Path:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records and checkpoints are ordinary files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if pause:
            time.sleep(pause)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and (when present) CUDA random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(run_dir, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` with :func:`torch.save` and write it atomically as ``run_dir/checkpoint.pt``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(checkpoint_path(run_dir), buffer.getvalue(), pause=_fault_sleep_in_write())


def load_checkpoint(run_dir_or_file, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint from a run directory (or the file itself).

    Raises FileNotFoundError naming the path when there is none, and ValueError naming the file when it is
    not a checkpoint this trainer wrote.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (a run directory written by `lorsp train --output DIR` "
                                f"holds {CHECKPOINT_NAME} after its first finished epoch)")
    try:
        # Our own files: they hold numpy RNG state and plain python objects besides tensors.
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path} is not a readable lorsp checkpoint: {error}") from error
    if not isinstance(payload, dict) or "epoch" not in payload or "model" not in payload:
        raise ValueError(f"{path} is not a lorsp checkpoint (expected keys 'epoch' and 'model')")
    return payload
