"""lorsp.backbones: the registry, weights from files (and their mismatch errors), random init only when
asked, the offline error of the pretrained download, and the real MobileNetV2 weights of the data root."""
from __future__ import annotations

import pytest
import torch

from lorsp import backbones
from lorsp.backbones import (BACKBONES, WeightsMismatchError, WeightsUnavailableError, create_backbone,
                             list_backbones)
from lorsp.data import data_root

TINY = "resnet10t"
MOBILENET_FILE = data_root() / "weights" / backbones.MOBILENETV2_FILE


@pytest.fixture
def hub_offline(monkeypatch):
    """The Hugging Face hub in offline mode, so a download attempt fails at once (HF_HUB_OFFLINE=1)."""
    import huggingface_hub.constants as constants

    monkeypatch.delenv("LORSP_OFFLINE", raising=False)   # timm's own offline path, not lorsp's refusal
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", "/nonexistent-lorsp-hf-home")  # no cached weights either
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-lorsp-hf-home/hub")


def test_registry_names_the_papers_backbones():
    expected = {"resnet50": "resnet50.tv2_in1k", "vit_b32": "vit_base_patch32_224.augreg_in21k_ft_in1k",
                "vit_b16": "vit_base_patch16_224_miil.in21k", "swin_b": "swin_base_patch4_window7_224.ms_in22k",
                "clip_vit_b32": "vit_base_patch32_clip_224.openai", "mobilenetv2": "mobilenetv2_100.ra_in1k"}
    assert set(expected) <= set(list_backbones())
    for name, timm_name in expected.items():
        assert BACKBONES[name].timm_name == timm_name
        assert backbones.resolve_backbone(name).timm_name == timm_name
    assert backbones.resolve_backbone(TINY).timm_name == TINY
    with pytest.raises(ValueError, match="unknown backbone 'resnet_51'"):
        create_backbone("resnet_51", random_init=True)


def test_random_init_only_when_asked_and_recorded(tmp_path):
    model, info = create_backbone(TINY, random_init=True, data_root=tmp_path, num_classes=0)
    assert info.weights_source == "random" and info.timm_name == TINY and info.num_features == 512
    assert info.num_classes == 0 and len(info.mean) == 3 and len(info.std) == 3
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    with pytest.raises(ValueError, match="either weights=FILE or random_init"):
        create_backbone(TINY, weights=tmp_path / "w.pth", random_init=True)


def test_weights_file_roundtrip_with_prefix_and_formats(tmp_path):
    from safetensors.torch import save_file

    source, _ = create_backbone(TINY, random_init=True, data_root=tmp_path)
    state = source.state_dict()
    pth = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, pth)
    model, info = create_backbone(TINY, weights=pth, data_root=tmp_path)
    assert info.weights_source == f"file:{pth.name}" and info.weights_sha256 == backbones.file_sha256(pth)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    st = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    model, info = create_backbone(TINY, weights=st, data_root=tmp_path)
    assert torch.equal(model.fc.weight, state["fc.weight"]) and info.weights_source.startswith("file:")
    # a new classifier size keeps the body and leaves the head at its initialisation
    model, info = create_backbone(TINY, weights=st, data_root=tmp_path, num_classes=7)
    assert info.num_classes == 7 and torch.equal(model.conv1[0].weight, state["conv1.0.weight"])
    # a file in the data root's weights/ folder is found without --weights
    (tmp_path / "weights").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "weights" / f"{TINY}.safetensors"))
    model, info = create_backbone(TINY, data_root=tmp_path)
    assert info.weights_source == f"file:{TINY}.safetensors"


def test_weights_from_another_architecture_name_the_key_and_shapes(tmp_path):
    other, _ = create_backbone(TINY, random_init=True, data_root=tmp_path, num_classes=10)
    path = tmp_path / "ten_classes.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(WeightsMismatchError, match=r"first mismatching key 'fc.weight'.*\(1000, 512\).*\(10, 512\)"):
        create_backbone(TINY, weights=path, data_root=tmp_path)
    foreign, _ = create_backbone("mobilenetv3_small_050", random_init=True, data_root=tmp_path)
    path = tmp_path / "mobilenet.pth"
    torch.save(foreign.state_dict(), path)
    with pytest.raises(WeightsMismatchError) as info:
        create_backbone(TINY, weights=path, data_root=tmp_path)
    message = str(info.value)
    assert str(path) in message and "resnet10t" in message
    assert "missing from the file" in message and "not in the model" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone(TINY, weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="cannot read weights file .*junk.pth"):
        create_backbone(TINY, weights=tmp_path / "junk.pth")


def test_pretrained_download_is_requested_and_a_network_failure_is_a_clear_error(tmp_path, monkeypatch):
    import timm

    calls = []
    real = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        if pretrained:
            raise OSError("[Errno -2] Name or service not known")  # what the network says offline
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    monkeypatch.delenv("LORSP_OFFLINE", raising=False)   # the download is attempted (and fails, spied)
    monkeypatch.setattr(backbones.create, "_hub_unreachable", lambda cfg: None)   # the hub seems to answer
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet50", data_root=tmp_path)
    assert calls == [("resnet50.tv2_in1k", True)]
    message = str(info.value)
    for part in ("'resnet50'", "resnet50.tv2_in1k", "--weights FILE", str(tmp_path / "weights"), "online",
                 "--random-init"):
        assert part in message, part


def test_an_unreachable_hub_fails_fast_without_the_hub_clients_retries(tmp_path, monkeypatch):
    import timm

    from lorsp.data import fetch

    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(a) or pytest.fail("download tried"))
    monkeypatch.delenv("LORSP_OFFLINE", raising=False)
    monkeypatch.setattr(fetch, "network_obstacle", lambda url: f"no network: could not reach {url} (refused)")
    with pytest.raises(WeightsUnavailableError, match=r"no network: could not reach .* not in its cache"):
        create_backbone("resnet50", data_root=tmp_path)
    assert calls == []


def test_offline_hub_gives_the_clear_error(tmp_path, hub_offline):
    with pytest.raises(WeightsUnavailableError, match=r"no weights for backbone 'resnet10t'.*--random-init"):
        create_backbone(TINY, data_root=tmp_path)
    with pytest.raises(WeightsUnavailableError, match=r"'mobilenetv2'.*mobilenetv2_100_tflite_in1k"):
        create_backbone("mobilenetv2", data_root=tmp_path)  # no local file in this data root


@pytest.mark.skipif(not MOBILENET_FILE.is_file(), reason=f"no {MOBILENET_FILE}")
def test_local_mobilenetv2_weights_classify_imagenet_samples():
    from lorsp.data import load_sample_images

    model, info = create_backbone("mobilenetv2")
    assert info.weights_source == f"file:{MOBILENET_FILE.name}" and info.timm_name == "mobilenetv2_100"
    assert info.mean == pytest.approx((128 / 255,) * 3) and info.std == pytest.approx((128 / 255,) * 3)
    assert info.num_classes == 1000 and info.num_features == 1280
    assert model.conv_stem.__class__.__name__ == "Conv2dSame"  # pad_type="same" from the file's metadata
    try:
        samples = load_sample_images(8, 224, seed=0)
    except FileNotFoundError:
        pytest.skip("no imagenet-samples in the data root")
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted = model((samples.images - mean) / std).argmax(1)
    correct = (predicted == samples.labels).sum().item()
    # measured 87.5 % top-1 on all 1,000 samples (center crop); chance is 0.1 %: 5 of 8 is a real pretrained net
    assert correct >= 5, (correct, samples.names, predicted.tolist())


@pytest.mark.parametrize("image_size", [64, 57])  # even sizes pad stride-2 layers 0|1, odd ones 1|1
def test_folded_backbone_keeps_the_outputs_and_input_gradients(image_size):
    import copy

    import timm

    torch.manual_seed(0)
    # SiLU instead of ReLU6: its kinks (0 and 6) would let a rounding flip a unit and with it whole input-gradient
    # regions; the folding does not depend on the activation
    model = timm.create_model("mobilenetv2_100", pad_type="same", num_classes=0, act_layer=torch.nn.SiLU).eval()
    for module in model.modules():  # batch norms with statistics that matter
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.2, 0.2)
    model.requires_grad_(False)
    fast = backbones.fold_frozen_backbone(copy.deepcopy(model), image_size)
    assert backbones.weights_fingerprint(fast) == pytest.approx(backbones.weights_fingerprint(model), rel=1e-12)
    assert fast.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    kinds = [type(m).__name__ for m in fast.modules()]
    assert "Conv2dSame" not in kinds and "BatchNormAct2d" not in kinds and "BatchNorm2d" not in kinds
    x = torch.rand(2, 3, image_size, image_size)
    grads = []
    for net in (model, fast):
        inputs = x.clone().requires_grad_()
        out = net.forward_head(net.forward_features(inputs), pre_logits=True)  # as PromptedModel.features
        out.square().sum().backward()
        grads.append((out.detach(), inputs.grad))
    (ref, ref_grad), (got, got_grad) = grads
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert torch.allclose(got_grad, ref_grad, rtol=1e-3, atol=1e-5 * float(ref_grad.abs().max()))
    if image_size % 2 == 0:  # the asymmetric padding is fixed for this size only
        with pytest.raises(ValueError, match="fixed for"):
            fast(torch.rand(1, 3, image_size + 2, image_size + 2))
