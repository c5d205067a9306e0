"""Creating a frozen backbone (:func:`create_backbone`): its weights from a file, random, the data root, an
installed package or timm's download, in the order :mod:`lorsp.backbones` lists; offline, an error that says
how to supply them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .registry import BackboneInfo, BackboneSpec, resolve_backbone, timm_architecture
from .weights import (WEIGHT_SUFFIXES, WeightsMismatchError, WeightsUnavailableError, file_sha256,
                      load_state_dict_file, load_weights_into)

#: ``LORSP_OFFLINE=1``: no network at all; a backbone whose weights are not in the data root is an error
OFFLINE_VAR = "LORSP_OFFLINE"


def _data_root(data_root):
    from ..data.root import data_root as resolve

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
    from ..data.fetch import hub_endpoint, network_obstacle

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
