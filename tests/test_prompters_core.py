"""LoRSP's prompt factors, spiking gate and sparsifier ablations (Eqs. 4–9, 13–15)."""
import pytest
import torch

import lorsp
from lorsp import build_prompter, prompt_param_count
from lorsp.prompters import LoRSPPrompter

LOW_RANK = ["lorsp", "lpf", "topk", "dropout", "threshold"]


def test_param_counts_match_the_paper_and_the_modules():
    assert prompt_param_count("lorsp", image_size=224, channels=3, groups=4, rank=4) == 6272  # "6.27K"
    assert prompt_param_count("lorsp", image_size=224, channels=3, groups=2, rank=2) == 2240  # "2.24K"
    assert prompt_param_count("lorsp", 224, 3, groups=4, rank=4, shared_basis=False) == 14336
    for name in LOW_RANK:
        for groups, rank, shared in [(4, 4, True), (2, 2, True), (3, 5, False)]:
            module = build_prompter(name, image_size=224, groups=groups, rank=rank, shared_basis=shared)
            assert module.num_prompt_params() == prompt_param_count(
                name, image_size=224, groups=groups, rank=rank, shared_basis=shared)


def test_param_count_non_square_uses_width():
    module = build_prompter("lorsp", image_size=(32, 48), channels=1, groups=2, rank=3)
    assert module.num_prompt_params() == prompt_param_count("lorsp", (32, 48), 1, groups=2, rank=3) == 48 * 3 * 3


def test_prompt_is_zero_at_init_then_trains_sparse():
    torch.manual_seed(0)
    prompter = build_prompter("lorsp", image_size=32, groups=4, rank=2)
    x = torch.rand(8, 3, 32, 32)
    assert torch.equal(prompter.prompt(x), torch.zeros_like(x))
    assert torch.equal(prompter(x), x)
    target = torch.randn(8, 3, 32, 32) * 0.1
    optimizer = torch.optim.SGD(prompter.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        loss = (prompter.prompt(x) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    explanation = prompter.explain(x)
    assert explanation.prompt.abs().sum() > 0
    assert 0 < explanation.firing_rate.mean() < 1  # some spikes are off
    assert (explanation.sparsity > 0).all() and (explanation.sparsity < 1).all()


def test_gradients_reach_projection_and_basis():
    torch.manual_seed(0)
    prompter = build_prompter("lorsp", image_size=16, groups=3, rank=2)
    torch.nn.init.normal_(prompter.factors.basis, std=0.1)
    x = torch.rand(2, 3, 16, 16)
    prompter.prompt(x).pow(2).sum().backward()
    assert prompter.factors.projection.grad.abs().sum() > 0
    assert prompter.factors.basis.grad.abs().sum() > 0


def test_very_low_threshold_equals_lpf_exactly():
    torch.manual_seed(0)
    lorsp_prompter = build_prompter("lorsp", image_size=24, groups=4, rank=3, v_threshold=-1e9, fused=False)
    torch.nn.init.normal_(lorsp_prompter.factors.basis)
    lpf = build_prompter("lpf", image_size=24, groups=4, rank=3)
    lpf.load_state_dict(lorsp_prompter.state_dict())
    x = torch.rand(3, 3, 24, 24)
    assert torch.equal(lorsp_prompter.prompt(x), lpf.prompt(x))
    lorsp_prompter.fused = True  # the fused path rebuilds each factor itself: equal to float rounding
    torch.testing.assert_close(lorsp_prompter.prompt(x), lpf.prompt(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_fused_default_matches_the_reference_path(v_reset):
    torch.manual_seed(0)
    fused = build_prompter("lorsp", image_size=20, groups=4, rank=2, v_threshold=0.0, v_reset=v_reset)
    assert fused.fused
    torch.nn.init.normal_(fused.factors.basis, std=0.5)
    reference = build_prompter("lorsp", image_size=20, groups=4, rank=2, v_threshold=0.0, v_reset=v_reset,
                               fused=False)
    reference.load_state_dict(fused.state_dict())
    x = torch.rand(3, 3, 20, 20)
    out_fused, out_reference = fused.prompt(x), reference.prompt(x)
    assert 0 < (out_reference == 0).float().mean() < 1
    torch.testing.assert_close(out_fused, out_reference, rtol=1e-6, atol=1e-6)
    out_fused.pow(2).sum().backward()
    out_reference.pow(2).sum().backward()
    for a, b in zip(fused.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_factors_follow_eqs_4_and_5():
    torch.manual_seed(0)
    prompter = build_prompter("lpf", image_size=(6, 8), channels=2, groups=3, rank=2)
    torch.nn.init.normal_(prompter.factors.basis)
    x = torch.rand(1, 2, 6, 8)
    factors = prompter.factors(x)
    a = x[0] @ prompter.factors.projection  # [C, H, G r], Eq. 4
    for g in range(3):
        a_g = a[..., g * 2:(g + 1) * 2]
        for c in range(2):
            expected = a_g[c] @ prompter.factors.basis[c]  # Eq. 5
            torch.testing.assert_close(factors[g, 0, c], expected)
            assert torch.linalg.matrix_rank(factors[g, 0, c]) <= 2


def test_explain_shapes_and_spikes_gate_factors():
    torch.manual_seed(0)
    prompter = LoRSPPrompter(image_size=16, groups=4, rank=2, v_threshold=0.05)
    torch.nn.init.normal_(prompter.factors.basis, std=0.5)
    x = torch.rand(5, 3, 16, 16)
    e = prompter.explain(x)
    assert e.factors.shape == e.spikes.shape == e.membrane.shape == (4, 5, 3, 16, 16)
    assert e.firing_rate.shape == (5, 4) and e.sparsity.shape == (5,)
    torch.testing.assert_close(e.prompt, (e.spikes * e.factors).mean(0))  # Eq. 9
    torch.testing.assert_close(prompter.prompt(x), e.prompt)
    stats = prompter.stats(x)
    assert set(stats) == {"sparsity", "firing_rate"}


@pytest.mark.parametrize("keep_ratio", [0.1, 0.5, 0.8])
def test_topk_keeps_the_largest_share(keep_ratio):
    torch.manual_seed(0)
    prompter = build_prompter("topk", image_size=16, keep_ratio=keep_ratio)
    torch.nn.init.normal_(prompter.factors.basis)
    x = torch.rand(4, 3, 16, 16)
    delta, dense = prompter.prompt(x), prompter.dense_prompt(x)
    kept = (delta != 0).flatten(1).float().mean(1)
    torch.testing.assert_close(kept, torch.full((4,), keep_ratio), atol=1 / 768, rtol=0)
    smallest_kept = delta.abs().flatten(1).masked_fill(delta.flatten(1) == 0, float("inf")).min(1).values
    largest_dropped = dense.abs().flatten(1).masked_fill(delta.flatten(1) != 0, 0).max(1).values
    assert (smallest_kept >= largest_dropped).all()


def test_dropout_and_threshold_sparsify():
    torch.manual_seed(0)
    dropout = build_prompter("dropout", image_size=32, keep_ratio=0.2)
    torch.nn.init.normal_(dropout.factors.basis)
    x = torch.rand(2, 3, 32, 32)
    kept = (dropout.prompt(x) != 0).float().mean()
    assert 0.15 < kept < 0.25
    dropout.eval()
    assert 0.15 < (dropout.prompt(x) != 0).float().mean() < 0.25  # mask_at_eval [reading]
    cut = dropout.dense_prompt(x).abs().median().item()
    threshold = build_prompter("threshold", image_size=32, threshold=cut)
    threshold.load_state_dict(dropout.state_dict())
    delta = threshold.prompt(x)
    assert ((delta == 0) | (delta.abs() >= cut)).all()
    assert 0.4 < (delta != 0).float().mean() < 0.6


@pytest.mark.parametrize("name", LOW_RANK)
@pytest.mark.parametrize("batch,channels,size", [(1, 3, 16), (7, 3, 16), (2, 1, 16), (3, 3, (12, 20))])
def test_shapes_batch_channels_non_square(name, batch, channels, size):
    prompter = build_prompter(name, image_size=size, channels=channels, groups=2, rank=2)
    torch.nn.init.normal_(prompter.factors.basis)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.rand(batch, channels, h, w, requires_grad=True)
    out = prompter(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.sum().backward()


def test_wrong_input_names_both_shapes():
    prompter = build_prompter("lorsp", image_size=32)
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\].*\(2, 1, 32, 32\)"):
        prompter(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(2, 3, 64, 64\)"):
        prompter(torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("kwargs,word", [(dict(groups=0), "groups"), (dict(rank=0), "rank"),
                                         (dict(rank=2.5), "rank"), (dict(tau=1.0), "tau"),
                                         (dict(image_size=0), "image_size")])
def test_bad_settings_name_the_value(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_prompter("lorsp", **kwargs)
    if "tau" not in kwargs:
        with pytest.raises(ValueError, match=word):
            prompt_param_count("lorsp", **kwargs)


def test_unknown_prompter_lists_the_names():
    with pytest.raises(ValueError, match="lorsp"):
        build_prompter("nope")
    assert set(LOW_RANK) <= set(lorsp.list_prompters())
