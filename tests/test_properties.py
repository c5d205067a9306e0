"""Property tests (hypothesis) for the LIF neuron (Eqs. 1–3) and every registered prompter (Eqs. 4–10 and
the baselines): finite outputs for finite inputs, output shape = input shape, sparsity and firing rates in
[0, 1], δ = 0 at init where the prompter documents it.

The prompters are read from ``lorsp.list_prompters()`` when the tests are collected, and
:func:`test_every_registered_prompter_is_covered` reads the list again at run time, so a prompter that is
registered later is either covered here or named with the reason it is not. Examples are small (images up to
24 px, ``max_examples`` 25) so that the file runs in a few seconds.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lorsp.prompters  # noqa: F401 - registers the prompters
from lorsp import LIF, build_prompter, list_prompters

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_SIDE = 24

# Keyword arguments a prompter needs at small image sizes (h, w) -> kwargs; the default builds with none.
SMALL_KWARGS = {
    # the frame prompts resize the image into an inner square that must fit inside the image
    "pad": lambda h, w, draw: {"inner_size": (draw(st.integers(1, h)), draw(st.integers(1, w))),
                               "squash": draw(st.sampled_from([None, "sigmoid"]))},
    "evp": lambda h, w, draw: {"inner_size": (draw(st.integers(1, h)), draw(st.integers(1, w)))},
}
# The low-rank family takes groups/rank/LIF settings (Eqs. 4–9); drawn per example.
LOW_RANK = {"lorsp", "lpf", "topk", "dropout", "threshold"}
# Prompters that document δ = 0 (forward(x) == x) right after construction, and why.
ZERO_AT_INIT = {
    "lorsp": "B = 0 at init (method.md, Init [reading])",
    "lpf": "B = 0 at init",
    "topk": "LPF's δ, B = 0 at init",
    "dropout": "LPF's δ, B = 0 at init",
    "threshold": "LPF's δ, B = 0 at init",
    "lorvp": "LoR-VP: B = 0, A ~ N(0, 0.01²)",
    "none": "linear probing: δ = 0 always",
}
# Prompters whose program (not δ: they also resize the image) starts at 0: forward(x) == shrink(x).
PROGRAM_ZERO_AT_INIT = {"pad": "the frame program starts at 0 (squash=None)"}
# Prompters that cannot be built from an image size alone; each names why and how it is covered instead.
NEEDS_BACKBONE = {
    "vpt": "VPT prepends prompt tokens inside a ViT/Swin backbone: it has no pixel-space forward of its own, "
           "so the pixel-space properties do not apply (its tests live with the baselines, through PromptedModel)",
}


def registered_prompters() -> list[str]:
    return list(list_prompters())


def pixel_prompters() -> list[str]:
    return [name for name in registered_prompters() if name not in NEEDS_BACKBONE]


# ---------------------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------------------
@st.composite
def images(draw, n=None, channels=None, height=None, width=None, low=0.0, high=1.0):
    """A float32 batch ``[N, C, H, W]`` with values in [low, high]: random, constant, binary or a ramp."""
    n = n or draw(st.integers(1, 3))
    channels = channels or draw(st.sampled_from([1, 3]))
    height = height or draw(st.integers(1, MAX_SIDE))
    width = width or draw(st.integers(1, MAX_SIDE))
    kind = draw(st.sampled_from(["uniform", "constant", "binary", "ramp"]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (n, channels, height, width)
    if kind == "uniform":
        unit = torch.rand(shape, generator=generator)
    elif kind == "constant":
        unit = torch.full(shape, draw(st.floats(0.0, 1.0, width=32)))
    elif kind == "binary":
        unit = (torch.rand(shape, generator=generator) < 0.5).float()
    else:
        unit = torch.linspace(0, 1, n * channels * height * width).view(shape)
    return (low + (high - low) * unit).float()


def randomise_parameters(module: torch.nn.Module, scale: float, seed: int) -> None:
    """Every parameter ~ N(0, scale²) (a trained, possibly large prompt instead of the init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


@st.composite
def built_prompters(draw, name, channels=None, height=None, width=None):
    """``(prompter, x)`` for prompter ``name`` at a small drawn size with drawn options."""
    channels = channels or draw(st.sampled_from([1, 3]))
    height = height or draw(st.integers(1, MAX_SIDE))
    width = width or draw(st.integers(1, MAX_SIDE))
    kwargs = {}
    if name in LOW_RANK:
        kwargs.update(groups=draw(st.integers(1, 4)), rank=draw(st.integers(1, 4)),
                      shared_basis=draw(st.booleans()))
    if name == "lorsp":
        kwargs.update(tau=draw(st.floats(1.01, 10.0)), v_threshold=draw(st.floats(-1.0, 1.0)),
                      v_reset=draw(st.sampled_from([0.0, -0.5, None])), detach_reset=draw(st.booleans()))
    if name in ("topk", "dropout"):
        kwargs["keep_ratio"] = draw(st.floats(0.01, 1.0))
    if name == "dropout":
        kwargs.update(rescale=draw(st.booleans()), mask_at_eval=draw(st.booleans()))
    if name == "lorvp":
        kwargs["rank"] = draw(st.integers(1, 4))
    if name in SMALL_KWARGS:
        kwargs.update(SMALL_KWARGS[name](height, width, draw))
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    prompter = build_prompter(name, image_size=(height, width), channels=channels, **kwargs)
    x = draw(images(channels=channels, height=height, width=width))
    return prompter, x


def assert_stats_in_unit_interval(stats: dict, n: int, where: str) -> None:
    assert "sparsity" in stats, f"{where}: stats() has no 'sparsity'"
    for key in ("sparsity", "firing_rate"):
        value = stats.get(key)
        if value is None:
            continue
        assert value.shape == (n,), f"{where}: stats()[{key!r}] has shape {tuple(value.shape)}, expected ({n},)"
        assert torch.isfinite(value).all(), f"{where}: stats()[{key!r}] is not finite: {value}"
        assert ((value >= 0) & (value <= 1)).all(), f"{where}: stats()[{key!r}] outside [0, 1]: {value}"


# ---------------------------------------------------------------------------------------------------------
# LIF (Eqs. 1–3)
# ---------------------------------------------------------------------------------------------------------
lif_settings = st.fixed_dictionaries({
    "tau": st.floats(1.0001, 100.0),
    "v_threshold": st.floats(-2.0, 2.0),
    "v_reset": st.one_of(st.none(), st.floats(-1.0, 1.0)),
    "surrogate_alpha": st.floats(0.1, 10.0),
    "detach_reset": st.booleans(),
})


@SETTINGS
@given(settings_=lif_settings, steps=st.integers(1, 6), shape=st.lists(st.integers(1, 5), min_size=0, max_size=3),
       magnitude=st.sampled_from([1e-6, 1.0, 1e3, 1e6]), seed=st.integers(0, 2**31 - 1))
def test_lif_spikes_are_binary_and_trace_is_finite(settings_, steps, shape, magnitude, seed):
    lif = LIF(**settings_)
    generator = torch.Generator().manual_seed(seed)
    inputs = (torch.randn((steps, *shape), generator=generator) * magnitude).requires_grad_(True)
    trace = lif(inputs, return_trace=True)
    for name, value in zip(("spikes", "membrane", "voltage"), trace):
        assert value.shape == inputs.shape, name
        assert torch.isfinite(value).all(), f"{name} not finite for inputs of magnitude {magnitude}"
    assert ((trace.spikes == 0) | (trace.spikes == 1)).all()
    rate = trace.spikes.detach().float().mean()
    assert 0.0 <= float(rate) <= 1.0
    # the plain call gives the trace's spikes
    assert torch.equal(lif(inputs.detach()), trace.spikes.detach())
    # Eq. 2 (Θ(0) = 1): a spike exactly where the membrane reaches the threshold
    assert torch.equal(trace.spikes.detach(), (trace.membrane.detach() >= settings_["v_threshold"]).float())
    # Eq. 3: after a spike the hard reset puts the voltage at V_reset
    if settings_["v_reset"] is not None:
        fired = trace.spikes.detach().bool()
        assert torch.all(trace.voltage.detach()[fired] == settings_["v_reset"])
    # the surrogate gradient (Eq. 2's Θ' replaced by α σ'(αu)) is finite
    (trace.spikes * torch.linspace(-1, 1, trace.spikes.numel()).view_as(trace.spikes)).sum().backward()
    assert torch.isfinite(inputs.grad).all()


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(settings_=lif_settings,
       rows=st.lists(st.lists(finite_float32, min_size=4, max_size=4), min_size=1, max_size=6))
def test_lif_spikes_stay_binary_for_any_finite_float32_input(settings_, rows):
    """Even for inputs up to float32's range (where the membrane itself may overflow) the spikes are 0 or 1."""
    inputs = torch.tensor(rows, dtype=torch.float32)
    spikes = LIF(**settings_)(inputs)
    assert spikes.shape == inputs.shape
    assert ((spikes == 0) | (spikes == 1)).all()


@SETTINGS
@given(steps=st.integers(1, 6), shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       tau=st.floats(1.0001, 100.0))
def test_lif_at_rest_fires_every_step_with_the_default_threshold(steps, shape, tau):
    """V_th = V_reset = 0 and zero input: H_t = 0 = V_th, Θ(0) = 1 (method.md: training starts from LPF)."""
    spikes = LIF(tau=tau)(torch.zeros((steps, *shape)))
    assert torch.equal(spikes, torch.ones_like(spikes))


@SETTINGS
@given(tau=st.floats(1.0001, 100.0), v_threshold=st.floats(-2.0, 2.0), steps=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_lif_is_elementwise(tau, v_threshold, steps, seed):
    """One neuron per element: running a slice alone gives that slice of the batched run."""
    lif = LIF(tau=tau, v_threshold=v_threshold)
    inputs = torch.randn((steps, 3, 4), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(lif(inputs)[:, 1:2], lif(inputs[:, 1:2].contiguous()))


@pytest.mark.parametrize("bad", [{"tau": 1.0}, {"tau": 0.5}, {"tau": float("nan")}, {"v_threshold": float("inf")},
                                 {"surrogate_alpha": 0.0}, {"v_reset": float("nan")}])
def test_lif_rejects_out_of_range_settings_naming_them(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LIF(**bad)


# ---------------------------------------------------------------------------------------------------------
# every registered prompter
# ---------------------------------------------------------------------------------------------------------
def test_every_registered_prompter_is_covered():
    """Read the registry again now (other modules may have registered more) and build each at a small size."""
    import lorsp.model  # noqa: F401 - anything it registers counts too
    names = registered_prompters()
    assert {"lorsp", "lpf", "topk", "dropout", "threshold"} <= set(names), names
    collected = set(PIXEL_PROMPTERS) | set(NEEDS_BACKBONE)
    missing = [name for name in names if name not in collected]
    assert not missing, (f"prompters {missing} were registered after these tests were collected; import them "
                         "from lorsp.prompters so that test_properties covers them")
    @settings(max_examples=1, deadline=None, derandomize=True, database=None)
    @given(data=st.data())
    def build_each(data):
        for name in pixel_prompters():
            kwargs = SMALL_KWARGS[name](8, 8, data.draw) if name in SMALL_KWARGS else {}
            try:
                prompter = build_prompter(name, image_size=(8, 8), channels=3, **kwargs)
            except Exception as error:  # noqa: BLE001 - reported with the name
                pytest.fail(f"prompter {name!r} cannot be built at 8×8 px with {kwargs}: {type(error).__name__}: "
                            f"{error}. Add its small-image options to SMALL_KWARGS in tests/test_properties.py, "
                            "or to NEEDS_BACKBONE with the reason it needs a backbone.")
            assert prompter(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)

    build_each()


PIXEL_PROMPTERS = pixel_prompters()


@pytest.mark.parametrize("name", PIXEL_PROMPTERS)
def test_prompter_output_and_gradients_are_finite_and_shaped_like_the_input(name):
    @SETTINGS
    @given(built=built_prompters(name), scale=st.sampled_from([0.0, 1e-3, 0.1, 1.0, 10.0]),
           seed=st.integers(0, 2**31 - 1), training=st.booleans())
    def check(built, scale, seed, training):
        prompter, x = built
        randomise_parameters(prompter, scale, seed)
        prompter.train(training)
        before = x.clone()
        x.requires_grad_(True)
        prompted = prompter(x)
        where = f"{name} {prompter.image_size} C={prompter.channels} scale={scale}"
        assert prompted.shape == x.shape, f"{where}: forward gives {tuple(prompted.shape)} for {tuple(x.shape)}"
        assert prompted.dtype == x.dtype, where
        assert torch.isfinite(prompted).all(), f"{where}: non-finite prompted image"
        prompted.square().mean().backward()
        assert torch.isfinite(x.grad).all(), f"{where}: non-finite input gradient"
        for pname, parameter in prompter.named_parameters():
            if parameter.grad is not None:
                assert torch.isfinite(parameter.grad).all(), f"{where}: non-finite gradient of {pname}"
        x = x.detach()
        assert torch.equal(x, before), f"{where}: the prompter changed its input in place"
        delta = prompter.prompt(x)
        assert delta.shape == x.shape, f"{where}: prompt gives {tuple(delta.shape)} for {tuple(x.shape)}"
        assert delta.dtype == x.dtype and torch.isfinite(delta).all(), f"{where}: non-finite prompt"
        assert_stats_in_unit_interval(prompter.stats(x), x.shape[0], where)

    check()


@pytest.mark.parametrize("name", PIXEL_PROMPTERS)
def test_prompter_outputs_stay_finite_for_inputs_outside_unit_range(name):
    """Finite inputs outside [0, 1] (e.g. an un-normalised image) still give finite outputs."""
    @SETTINGS
    @given(data=st.data(), scale=st.sampled_from([0.0, 1e-2, 1.0]), seed=st.integers(0, 2**31 - 1),
           bound=st.sampled_from([1.0, 255.0, 1e4]))
    def check(data, scale, seed, bound):
        prompter, _ = data.draw(built_prompters(name))
        h, w = prompter.image_size
        x = data.draw(images(channels=prompter.channels, height=h, width=w, low=-bound, high=bound))
        randomise_parameters(prompter, scale, seed)
        prompted = prompter(x)
        assert prompted.shape == x.shape and torch.isfinite(prompted).all()
        assert_stats_in_unit_interval(prompter.stats(x), x.shape[0], name)

    check()


ZERO_INIT_NAMES = [n for n in PIXEL_PROMPTERS if n in ZERO_AT_INIT or n in PROGRAM_ZERO_AT_INIT]


@pytest.mark.parametrize("name", ZERO_INIT_NAMES)
def test_prompt_is_zero_at_init_where_documented(name):
    @SETTINGS
    @given(built=built_prompters(name), training=st.booleans())
    def check(built, training):
        prompter, x = built
        prompter.train(training)
        if name in ZERO_AT_INIT:
            assert torch.equal(prompter.prompt(x), torch.zeros_like(x)), ZERO_AT_INIT[name]
            assert torch.equal(prompter(x), x), ZERO_AT_INIT[name]
            assert torch.equal(prompter.stats(x)["sparsity"], torch.ones(x.shape[0])), name
        else:
            if getattr(prompter, "squash", None) is not None:
                return  # sigmoid(0) = 0.5: not documented as zero
            assert torch.equal(prompter.program(), torch.zeros_like(prompter.program())), PROGRAM_ZERO_AT_INIT[name]
            assert torch.equal(prompter(x), prompter.shrink(x)), PROGRAM_ZERO_AT_INIT[name]

    check()


# ---------------------------------------------------------------------------------------------------------
# LoRSP-specific properties (Eqs. 6–9)
# ---------------------------------------------------------------------------------------------------------
@SETTINGS
@given(built=built_prompters("lorsp"), scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0]), seed=st.integers(0, 2**31 - 1))
def test_lorsp_explanation_is_consistent_and_in_range(built, scale, seed):
    prompter, x = built
    randomise_parameters(prompter, scale, seed)
    e = prompter.explain(x)
    groups, n = prompter.groups, x.shape[0]
    assert e.factors.shape == e.spikes.shape == e.membrane.shape == (groups, *x.shape)
    assert e.prompt.shape == x.shape
    assert ((e.spikes == 0) | (e.spikes == 1)).all()
    assert e.firing_rate.shape == (n, groups) and e.sparsity.shape == (n,)
    for value in (e.firing_rate, e.sparsity):
        assert torch.isfinite(value).all() and ((value >= 0) & (value <= 1)).all()
    # Eq. 9: δ = (1/G) Σ_t S_t ⊙ F_t, and it is what prompt() returns
    assert torch.allclose(e.prompt, (e.spikes * e.factors).mean(0), rtol=1e-5, atol=1e-6 * (1 + scale ** 2))
    assert torch.allclose(prompter.prompt(x), e.prompt, rtol=1e-5, atol=1e-6 * (1 + scale ** 2))
    # an entry of δ with no spike at any step is exactly 0: sparsity >= share of never-firing neurons
    silent = (e.spikes.sum(0) == 0).flatten(1).float().mean(1)
    assert (e.sparsity >= silent - 1e-6).all()


@SETTINGS
@given(built=built_prompters("lorsp"), seed=st.integers(0, 2**31 - 1))
def test_lorsp_with_every_spike_on_is_lpf(built, seed):
    """A threshold far below every membrane makes every neuron fire: LoRSP reduces to LPF (method.md)."""
    prompter, x = built
    randomise_parameters(prompter, 0.1, seed)
    lpf = build_prompter("lpf", image_size=prompter.image_size, channels=prompter.channels,
                         groups=prompter.groups, rank=prompter.rank, shared_basis=prompter.factors.shared_basis)
    lpf.load_state_dict({k: v for k, v in prompter.state_dict().items() if k.startswith("factors.")})
    prompter.lif.v_threshold = -1e9
    assume(math.isfinite(float(prompter.factors(x).detach().abs().max())))
    assert torch.equal(prompter.explain(x).spikes, torch.ones_like(prompter.explain(x).spikes))
    assert torch.allclose(prompter.prompt(x), lpf.prompt(x), rtol=1e-6, atol=1e-7)
