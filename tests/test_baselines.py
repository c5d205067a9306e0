"""Baseline prompters (issue 3): parameter counts, EVP, its optimizer, VPT attach errors."""
import pytest
import timm
import torch

import lorsp
from lorsp.optim import EVPOptimizer, build_evp_optimizer


@pytest.mark.parametrize("method, kwargs, expected", [
    ("lorvp", dict(rank=4), 5376),
    ("pad", dict(inner_size=32), 147456),
    ("pad", dict(inner_size=160), 73728),
    ("evp", dict(), 69840),
    ("vpt", dict(num_tokens=10, embed_dim=768, depth="shallow"), 7680),
    ("vpt", dict(num_tokens=10, embed_dim=768, depth="deep", num_layers=12), 92160),
])
def test_param_counts(method, kwargs, expected):
    assert lorsp.prompt_param_count(method, image_size=224, channels=3, **kwargs) == expected
    if method != "vpt":
        assert lorsp.build_prompter(method, image_size=224, **kwargs).num_prompt_params() == expected


def test_evp_inner_size_and_errors():
    prompter = lorsp.build_prompter("evp", image_size=64, pad_size=10)
    assert prompter.inner_size == (44, 44)
    assert prompter.num_prompt_params() == 3 * (64 ** 2 - 44 ** 2)
    with pytest.raises(ValueError, match="pad_size"):
        lorsp.build_prompter("evp", image_size=32)  # 32 - 60 <= 0
    assert lorsp.prompt_param_count("evp", image_size=64, inner_size=(40, 50)) == 3 * (64 * 64 - 40 * 50)


def test_evp_input_diversity_train_only():
    prompter = lorsp.build_prompter("evp", image_size=32, pad_size=4)
    x = torch.rand(4, 3, 32, 32)
    prompter.eval()
    assert torch.equal(prompter(x), prompter(x))
    prompter.train()
    torch.manual_seed(0)
    first = prompter(x)
    torch.manual_seed(0)
    assert torch.equal(first, prompter(x))  # seeded by torch's global RNG
    assert not torch.equal(first, prompter.eval()(x))


def test_evp_optimizer_normalises_prompt_gradient_only():
    prompt = torch.nn.Parameter(torch.zeros(10))
    head = torch.nn.Parameter(torch.zeros(3))
    opt = EVPOptimizer([{"params": [prompt]}, {"params": [head], "normalize": False}], lr=0.5, momentum=0.0)
    prompt.grad = torch.full((10,), 7.0)
    head.grad = torch.full((3,), 2.0)
    opt.step()
    assert torch.allclose(prompt, -0.5 * torch.full((10,), 7.0) / (7.0 * 10 ** 0.5))  # step of length lr
    assert torch.allclose(torch.linalg.vector_norm(prompt), torch.tensor(0.5))
    assert torch.allclose(head, torch.full((3,), -1.0))  # plain SGD: lr * grad


def test_evp_optimizer_momentum_and_groups():
    from lorsp.model import PromptedModel
    backbone = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    model = PromptedModel(backbone, lorsp.build_prompter("evp", image_size=64, pad_size=8), num_classes=3,
                          mean=(0.5,) * 3, std=(0.5,) * 3)
    opt = build_evp_optimizer(model.trainable_parameters(), lr=0.1, momentum=0.9, weight_decay=0.0, model=model)
    assert [g["normalize"] for g in opt.param_groups] == [True, False]
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.prompter.parameters()}
    p = torch.nn.Parameter(torch.zeros(2))
    opt = EVPOptimizer([p], lr=1.0, momentum=0.5)
    for _ in range(2):
        p.grad = torch.tensor([3.0, 4.0])
        opt.step()
    # unit gradient [0.6, 0.8]; momentum buffer: 1, then 1.5 times it
    assert torch.allclose(p, -2.5 * torch.tensor([0.6, 0.8]))
    with pytest.raises(ValueError, match="lr"):
        EVPOptimizer([p], lr=0.0)


def test_vpt_identity_and_clear_errors():
    prompter = lorsp.build_prompter("vpt", image_size=32)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(prompter(x), x) and not prompter.prompt(x).any()
    assert prompter.num_prompt_params() == 0  # tokens exist only after attach
    with pytest.raises(ValueError, match="VPT needs a timm VisionTransformer.*ResNet"):
        prompter.attach(timm.create_model("resnet10t", pretrained=False))
    with pytest.raises(ValueError, match="depth"):
        lorsp.build_prompter("vpt", image_size=32, depth="middle")


@pytest.mark.parametrize("depth", ["shallow", "deep"])
def test_vpt_count_after_attach_and_pooling(depth):
    from lorsp.model import PromptedModel
    torch.manual_seed(0)
    for pool in ("token", "avg"):
        backbone = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, global_pool=pool,
                                     depth=2)
        prompter = lorsp.build_prompter("vpt", image_size=32, num_tokens=3, depth=depth)
        model = PromptedModel(backbone, prompter, num_classes=4, mean=(0.5,) * 3, std=(0.5,) * 3)
        assert prompter.num_prompt_params() == lorsp.prompt_param_count(
            "vpt", num_tokens=3, embed_dim=192, depth=depth, num_layers=2)
        tokens = backbone.forward_features(torch.rand(2, 3, 32, 32))
        assert tokens.shape[1] == backbone.num_prefix_tokens + 4  # prompt tokens removed before pooling
        with torch.no_grad():
            prompter.tokens.normal_()
        assert prompter.tokens in model.trainable_parameters()
        assert not any(p is prompter.tokens for p in backbone.parameters())
