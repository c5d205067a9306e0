"""PromptedModel (issue 3): prompts change logits, frozen backbone, label mapping, three families."""
import pytest
import timm
import torch

import lorsp
from lorsp.model import PromptedModel, compute_label_mapping

SIZE = 32
NORM = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
KWARGS = {"pad": dict(inner_size=16), "evp": dict(pad_size=6), "vpt": dict(num_tokens=2, depth="deep"),
          "lorsp": dict(groups=2, rank=2), "lpf": dict(groups=2, rank=2), "topk": dict(groups=2, rank=2),
          "dropout": dict(groups=2, rank=2), "threshold": dict(groups=2, rank=2)}
PROMPTED = [name for name in lorsp.list_prompters() if name != "none"]


def make_backbone(family, num_classes=0):
    torch.manual_seed(0)
    if family == "resnet":
        return timm.create_model("resnet10t", pretrained=False, num_classes=num_classes)
    if family == "vit":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, depth=2,
                                 num_classes=num_classes)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=SIZE, window_size=2,
                             embed_dim=24, depths=(1, 1), num_heads=(1, 2), num_classes=num_classes)


def build(name, family="vit", head="linear", num_classes=3):
    backbone = make_backbone(family, num_classes=0 if head == "linear" else 10)
    prompter = lorsp.build_prompter(name, image_size=SIZE, **KWARGS.get(name, {}))
    return PromptedModel(backbone, prompter, head=head, num_classes=num_classes, **NORM)


def fill_with_noise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("name", PROMPTED)
def test_every_prompt_changes_the_logits(name):
    model = build(name, family="vit").eval()
    fill_with_noise(model.prompter)
    assert model.prompter.num_prompt_params() > 0
    lp = PromptedModel(make_backbone("vit"), None, num_classes=3, **NORM).eval()  # fresh: VPT patches its own
    lp.backbone.load_state_dict(model.backbone.state_dict())
    lp.head.load_state_dict(model.head.state_dict())
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert not torch.allclose(model(x), lp(x))


@pytest.mark.parametrize("name, family, head", [("lorvp", "resnet", "linear"), ("pad", "resnet", "ilm"),
                                                ("evp", "resnet", "fullymap"), ("vpt", "vit", "linear"),
                                                ("lorsp", "resnet", "linear")])
def test_step_leaves_backbone_bitwise_unchanged(name, family, head):
    model = build(name, family=family, head=head)
    model.train()
    fill_with_noise(model.prompter)
    before_backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = model.trainable_parameters()
    before_train = [p.detach().clone() for p in trainable]
    assert all(not p.requires_grad for p in model.backbone.parameters())
    opt = torch.optim.SGD(trainable, lr=0.1)
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 0])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    for key, value in model.backbone.state_dict().items():  # parameters and buffers (BN statistics)
        assert torch.equal(value, before_backbone[key]), key
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before_train))
    trainable_ids = {id(p) for p in trainable}
    assert all(p.grad is None for p in model.parameters() if id(p) not in trainable_ids)


def test_greedy_label_mapping_on_hand_built_matrix():
    frequency = torch.tensor([[5, 9, 0, 1],
                              [0, 8, 7, 0],
                              [6, 0, 2, 3]])
    # 9 → (0,1); then row 1 best among cols {0,2,3}: 7 at col 2 vs row 2: 6 at col 0 → (1,2), then (2,0)
    assert compute_label_mapping(frequency).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="source classes"):
        compute_label_mapping(torch.ones(5, 3))


@pytest.mark.parametrize("head, expected_updates", [("flm", 1), ("ilm", 2)])
def test_flm_once_ilm_every_call(head, expected_updates):
    model = build("pad", family="resnet", head=head)
    first = torch.zeros(6, 10)
    first[torch.arange(6), torch.tensor([4, 4, 7, 7, 1, 1])] = 1
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert model.update_label_mapping(first, labels).tolist() == [4, 7, 1]
    second = torch.zeros(6, 10)
    second[torch.arange(6), torch.tensor([2, 2, 3, 3, 5, 5])] = 1
    mapping = model.update_label_mapping(second, labels, epoch=1).tolist()
    assert int(model.head.updates) == expected_updates
    assert mapping == ([4, 7, 1] if head == "flm" else [2, 3, 5])
    logits = torch.randn(2, 10)
    assert torch.equal(model.head(logits), logits[:, torch.tensor(mapping)])


@pytest.mark.parametrize("family", ["resnet", "vit", "swin"])
@pytest.mark.parametrize("name", lorsp.list_prompters())
def test_forward_backward_three_families(name, family):
    if name == "vpt" and family != "vit":
        with pytest.raises(ValueError, match="VPT needs a timm VisionTransformer"):
            build(name, family=family)
        return
    model = build(name, family=family).train()
    fill_with_noise(model.prompter)  # a non-zero prompt (thresholding zeroes the small init prompt entirely)
    out = model(torch.rand(2, 3, SIZE, SIZE))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    if model.prompter.num_prompt_params():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prompter.parameters())


def test_real_mobilenetv2_when_present():
    from lorsp.data import data_root
    if not (data_root() / "weights" / "mobilenetv2_100_tflite_in1k.safetensors").is_file():
        pytest.skip("MobileNetV2 weights absent from the data root")
    from lorsp.backbones import create_backbone
    backbone, info = create_backbone("mobilenetv2")
    for name in ("lorvp", "evp", "pad"):
        prompter = lorsp.build_prompter(name, image_size=224, **({"inner_size": 160} if name == "pad" else {}))
        model = PromptedModel(backbone, prompter, num_classes=3)
        out = model(torch.rand(1, 3, 224, 224))
        out.sum().backward()
        assert all(p.grad is not None for p in model.prompter.parameters())
        assert all(p.grad is None for p in backbone.parameters())
    with pytest.raises(ValueError, match="VPT needs"):
        PromptedModel(backbone, lorsp.build_prompter("vpt", image_size=224), num_classes=3)


def test_normalisation_from_timm_config_or_explicit():
    backbone = make_backbone("resnet")
    model = PromptedModel(backbone, None, num_classes=3)
    config = timm.data.resolve_data_config({}, model=backbone)
    assert model.mean.flatten().tolist() == pytest.approx(list(config["mean"]))
    assert model.std.flatten().tolist() == pytest.approx(list(config["std"]))
    model = PromptedModel(make_backbone("resnet"), None, num_classes=3, mean=torch.tensor([0.5] * 3), std=(0.5,) * 3)
    assert model.mean.flatten().tolist() == [0.5] * 3
    with pytest.raises(ValueError, match="std > 0"):
        PromptedModel(make_backbone("resnet"), None, num_classes=3, mean=(0.5,) * 3, std=(0.5, 0.0, 0.5))
