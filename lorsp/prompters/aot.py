"""Compiled kernels kept on disk as ahead-of-time packages (torch.export + AOTInductor), for a CPU.

``torch.compile`` keeps its kernels in a cache between processes too, but a process that finds them there still
traces the Python function and loads the graph again: about 16 s at the desk shape
(``benchmarks/cpu-compile-cache-64.json``), which a 24-step benchmark or a short run never repays. A package
built once by ``torch.export.export`` and ``torch._inductor.aoti_compile_and_package`` loads in milliseconds
(``torch._inductor.aoti_load_package``), so from then on every run and process of that configuration runs the
compiled kernels from its first step.

This module knows nothing of the LIF: :func:`load_or_build` takes a pure tensor function (no autograd), example
inputs, which of their dimensions is the batch (exported as a dynamic dimension, so that one package serves
every batch size), and the package's path; :func:`package_key` names a package by what it was built for, plus
torch's version and the CPU's vector instruction set (a package built for AVX-512 must not load on a CPU
without it). :mod:`lorsp.prompters.fused_compiled` uses it for LoRSP's gate (:func:`~lorsp.prompters.fused.
compiled_gate_cached`).

Where compiled kernels are kept between processes: the packages in :func:`aot_package_dir`, and
``torch.compile``'s own caches (CUDA) in :func:`compile_cache_dir` once :func:`use_persistent_compile_cache` ran.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["package_key", "load_or_build", "is_built", "vector_isa", "aot_package_dir", "compile_cache_dir",
           "use_persistent_compile_cache"]

#: packages loaded in this process, by path
_LOADED: dict[str, Callable] = {}


@functools.lru_cache(maxsize=None)
def vector_isa() -> str:
    """The CPU's vector instruction set as torch dispatches to it here (``AVX512``, ``AVX2``, ``DEFAULT``, ...;
    ``torch.backends.cpu.get_cpu_capability``), the level inductor's CPU kernels are built for. Asked of ATen
    rather than of inductor, whose import would log a CUDA warning into every notebook that asks whether a gate
    is built."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # an older torch: name the machine instead
        return platform.machine() or "unknown"


def package_key(name: str, **built_for) -> str:
    """``<name>-<hash>``: the file name of the package of ``name`` built for ``built_for`` (ints, strings,
    dtypes), this torch, this Python and this CPU's vector instruction set."""
    described = {key: str(value) for key, value in sorted(built_for.items())}
    described.update(torch=torch.__version__, python=f"{sys.version_info[0]}.{sys.version_info[1]}",
                     isa=vector_isa())
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return f"{name}-{digest}"


def _path(folder, key: str) -> Path:
    return Path(folder) / f"{key}.pt2"


def is_built(folder, key: str) -> bool:
    """Whether the package ``key`` exists in ``folder`` (loading it costs milliseconds)."""
    return _path(folder, key).is_file()


class _Exported(torch.nn.Module):
    """A pure tensor function as the module ``torch.export`` wants."""

    def __init__(self, function: Callable):
        super().__init__()
        self.function = function

    def forward(self, *inputs):
        return self.function(*inputs)


def _build(function: Callable, inputs: Sequence[torch.Tensor], batch_inputs: Sequence[int], path: Path) -> None:
    """Export ``function`` at ``inputs`` with dimension 0 of the inputs ``batch_inputs`` dynamic, compile it
    with AOTInductor and write the package to ``path`` (atomically: a crash leaves no half-written package,
    and two processes building the same one each write a whole one)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dynamic = tuple({0: batch} if index in batch_inputs else None for index in range(len(inputs)))
    exported = torch.export.export(_Exported(function), tuple(inputs), dynamic_shapes=(dynamic,))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f"{path.stem}.partial-", suffix=".pt2", dir=path.parent)
    os.close(handle)
    try:
        torch._inductor.aoti_compile_and_package(exported, package_path=partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_or_build(function: Callable, inputs: Sequence[torch.Tensor], batch_inputs: Sequence[int], folder,
                  key: str) -> Callable:
    """The compiled ``function`` as a callable on tensors like ``inputs``: the package ``key`` in ``folder``,
    loaded (milliseconds), or first built there (a minute or more on a CPU: torch.export, then a C++ compile).
    ``batch_inputs``: the indices of the inputs whose dimension 0 is the batch, which may differ between
    calls. Inputs must be contiguous."""
    path = _path(folder, key)
    loaded = _LOADED.get(str(path))
    if loaded is None:
        if not path.is_file():
            _build(function, inputs, batch_inputs, path)
        loaded = _LOADED[str(path)] = torch._inductor.aoti_load_package(str(path))
    return loaded


def aot_package_dir() -> str:
    """Where the CPU's packages (LoRSP's compiled LIF gates) are kept: ``$LORSP_AOT_CACHE`` when set, else
    ``$XDG_CACHE_HOME/lorsp/aot`` (``~/.cache/lorsp/aot``), which outlives ``/tmp``. Not inductor's
    ``$TORCHINDUCTOR_CACHE_DIR``: inductor sets that variable itself (to ``/tmp/torchinductor_<user>``) the first
    time any of its code runs in a process, so it cannot tell whether a user chose it."""
    return os.environ.get("LORSP_AOT_CACHE") or _user_cache_dir("aot")


def compile_cache_dir() -> str:
    """Where ``torch.compile`` (CUDA) keeps its compiled kernels between processes (the CPU's packages are in
    :func:`aot_package_dir`): ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/lorsp/inductor`` (``~/.cache/lorsp/inductor``), which outlives ``/tmp``."""
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or _user_cache_dir("inductor")


def _user_cache_dir(name: str) -> str:
    """``$XDG_CACHE_HOME/lorsp/<name>`` (``~/.cache/lorsp/<name>``): lorsp's folders that outlive ``/tmp``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lorsp", name)


def use_persistent_compile_cache() -> str:
    """Point inductor's caches (its FX-graph and AOT-autograd caches, on by default) at :func:`compile_cache_dir`
    unless ``TORCHINDUCTOR_CACHE_DIR`` is set: a later run or process that compiles the same shapes loads the
    kernels instead of compiling them again (``benchmarks/compile_cache.py`` measures both)."""
    path = compile_cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", path)
    return path
