"""The fused LIF + gating (Eqs. 6–9) against the reference ``LoRSPPrompter.gate`` / ``.prompt``."""
import functools
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from lorsp.prompters.fused import (SavedTensorMeter, fused_lif_gate, fused_lorsp_prompt, lif_gate_spikes)
from lorsp.prompters.lowrank_sparse import LoRSPPrompter

RESETS = [0.0, None, 0.3]  # hard reset at 0, soft reset, hard reset at 0.3
IDS = ["hard", "soft", "hard0.3"]


def _prompter(v_reset, detach_reset, size=16, groups=3, rank=2, shared_basis=True, seed=0):
    torch.manual_seed(seed)
    prompter = LoRSPPrompter(image_size=size, groups=groups, rank=rank, tau=2.5, v_threshold=0.1,
                             v_reset=v_reset, detach_reset=detach_reset, shared_basis=shared_basis, fused=False)
    # B = 0 at init gives δ = 0 and every neuron firing; random factors exercise spikes on and off
    torch.nn.init.normal_(prompter.factors.basis, std=0.5)
    torch.nn.init.normal_(prompter.factors.projection, std=0.5)
    return prompter


def _lif_args(prompter):
    lif = prompter.lif
    return lif.tau, lif.v_threshold, lif.v_reset, lif.surrogate_alpha, lif.detach_reset


def _params(prompter):
    return prompter.factors.projection, prompter.factors.basis


def _prompt_and_grads(prompter, x, grad_out, prompt=None):
    """δ = ``prompt(x)`` (default: the prompter's own path) and the gradients of P and B for the loss
    Σ δ ⊙ grad_out; the prompter's gradients are reset afterwards."""
    delta = (prompt or prompter.prompt)(x)
    (delta * grad_out).sum().backward()
    grads = [p.grad.clone() for p in _params(prompter)]
    prompter.zero_grad()
    return delta, grads


def _assert_grads_close(prompter, expected, atol=1e-5, scaled=True):
    """The gradients of P and B now held by ``prompter`` equal ``expected`` (relative to its largest entry
    when ``scaled``)."""
    for param, grad in zip(_params(prompter), expected):
        scale = grad.abs().max() if scaled else 1.0
        torch.testing.assert_close(param.grad / scale, grad / scale, atol=atol, rtol=atol)


@pytest.mark.parametrize("chunk", [None, 100])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("v_reset", RESETS, ids=IDS)
def test_fused_gate_matches_reference_exactly(v_reset, detach_reset, chunk):
    prompter = _prompter(v_reset, detach_reset)
    x = torch.rand(3, 3, 16, 16)
    factors = prompter.factors(x).detach().requires_grad_()
    reference, trace = prompter.gate(factors, return_trace=True)
    spikes = trace.spikes
    assert 0.1 < spikes.mean() < 0.9  # both branches of the reset are exercised
    grad_out = torch.randn_like(reference)
    (grad_reference,) = torch.autograd.grad(reference, factors, grad_out)

    fused_factors = factors.detach().clone().requires_grad_()
    fused = fused_lif_gate(fused_factors, *_lif_args(prompter), chunk_elements=chunk)
    (grad_fused,) = torch.autograd.grad(fused, fused_factors, grad_out)
    assert torch.equal(fused, reference)  # bit-identical forward
    fused_spikes, delta = lif_gate_spikes(factors.detach(), prompter.lif.tau, prompter.lif.v_threshold,
                                          prompter.lif.v_reset)
    assert torch.equal(fused_spikes, spikes)
    assert torch.equal(delta, reference)
    torch.testing.assert_close(grad_fused, grad_reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("v_reset", RESETS, ids=IDS)
@pytest.mark.parametrize("shared_basis", [True, False])
def test_fused_prompt_matches_reference(v_reset, detach_reset, shared_basis):
    prompter = _prompter(v_reset, detach_reset, shared_basis=shared_basis)
    x = torch.rand(5, 3, 16, 16)
    grad_out = torch.randn(5, 3, 16, 16)
    reference, grads = _prompt_and_grads(prompter, x, grad_out)
    for chunk in (None, 3 * 16 * 16 * 2):  # whole batch, and chunks of two images (the last one odd)
        fused = fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter), chunk_elements=chunk)
        (fused * grad_out).sum().backward()
        torch.testing.assert_close(fused, reference, atol=1e-6, rtol=1e-6)
        _assert_grads_close(prompter, grads)
        prompter.zero_grad()


def test_fused_gate_default_settings_and_zero_basis():
    """At init (B = 0) δ = 0 and every neuron fires (V_th = 0, Θ(0) = 1); gradients still reach B."""
    torch.manual_seed(0)
    prompter = LoRSPPrompter(image_size=8)
    x = torch.rand(2, 3, 8, 8)
    factors = prompter.factors(x)
    spikes, delta = lif_gate_spikes(factors.detach())
    assert torch.equal(spikes, torch.ones_like(spikes)) and torch.equal(delta, torch.zeros_like(delta))
    fused_lorsp_prompt(x, prompter.factors.projection, prompter.factors.basis).sum().backward()
    assert prompter.factors.basis.grad.abs().sum() > 0


def test_fused_saves_far_fewer_bytes():
    prompter = _prompter(0.0, False, size=32, groups=4, rank=4)
    x = torch.rand(4, 3, 32, 32)
    image_bytes = x.numel() * 4
    params = list(prompter.parameters())
    with SavedTensorMeter(exclude=params) as reference:
        prompter.prompt(x)
    with SavedTensorMeter(exclude=params) as gate:
        fused_lif_gate(prompter.factors(x), *_lif_args(prompter))
    with SavedTensorMeter(exclude=params) as full:
        fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter))
    assert reference.bytes > 10 * image_bytes  # the reference keeps > 2 image-sized tensors per time step
    # the G = 4 factors, plus what the factors' own einsum saves (x and A = xP, G·r/W = 1/2 of an image here)
    assert gate.bytes <= (4 + 1 + 0.5) * image_bytes
    assert full.bytes < 2 * image_bytes  # x and A = xP only
    assert reference.bytes > 10 * full.bytes


def test_fused_errors_name_the_problem():
    with pytest.raises(ValueError, match="G >= 1"):
        fused_lif_gate(torch.zeros(0, 2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        fused_lif_gate(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tau"):
        fused_lif_gate(torch.zeros(2, 3), tau=1.0)
    with pytest.raises(ValueError, match="projection"):
        fused_lorsp_prompt(torch.rand(1, 3, 8, 8), torch.zeros(7, 4), torch.zeros(3, 2, 8))
    with pytest.raises(ValueError, match="basis"):
        fused_lorsp_prompt(torch.rand(1, 3, 8, 8), torch.zeros(8, 4), torch.zeros(2, 2, 8))
    with pytest.raises(ValueError, match="chunk_elements"):
        fused_lif_gate(torch.zeros(2, 3), chunk_elements=0)
    with pytest.raises(ValueError, match="backend"):
        fused_lorsp_prompt(torch.rand(1, 3, 8, 8), torch.zeros(8, 4), torch.zeros(3, 2, 8), backend="triton")


_NEEDS_COMPILER = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                     reason="compiling on a CPU needs a C++ compiler (g++)")


@pytest.fixture(scope="module")
def aot_cache(tmp_path_factory):
    """A compile cache of this module's own (its packages are built once, for all its compiled tests)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("inductor")
        patch.setenv("LORSP_AOT_CACHE", str(folder / "aot"))
        yield folder


@_NEEDS_COMPILER
def test_compiled_backend_matches_reference_with_one_package_for_every_setting(aot_cache):
    """Every LIF setting (hard or soft reset, the reset's gradient or not, τ, V_th) and batch size runs through
    the same two packages (δ and its gradients), built once: the settings are data, the batch is dynamic."""
    from lorsp.prompters import fused

    settings = [(0.0, False, 4.0, 0.0), (0.0, True, 4.0, 0.0), (None, False, 4.0, 0.0), (None, True, 4.0, 0.0),
                (0.0, False, 2.5, 0.1), (None, False, 1.5, -0.05)]
    for index, (v_reset, detach_reset, tau, v_threshold) in enumerate(settings):
        prompter = _prompter(v_reset, detach_reset)
        prompter.lif.tau, prompter.lif.v_threshold = tau, v_threshold
        batch = 2 + index % 3
        x, grad_out = torch.rand(batch, 3, 16, 16), torch.randn(batch, 3, 16, 16)
        reference, grads = _prompt_and_grads(prompter, x, grad_out)
        compiled = fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter), backend="compile")
        (compiled * grad_out).sum().backward()
        torch.testing.assert_close(compiled, reference, atol=1e-6, rtol=1e-6)
        _assert_grads_close(prompter, grads)
    packages = sorted(p.name for p in (aot_cache / "aot").iterdir())
    assert len(packages) == 2 and packages[0].startswith("lorsp-lif-backward"), packages
    assert fused.compiled_gate_cached(3, 2, 3, 16, 16) and not fused.compiled_gate_cached(3, 2, 3, 16, 32)


@_NEEDS_COMPILER
def test_auto_loads_a_cached_gate_whatever_the_runs_length(aot_cache, monkeypatch):
    from lorsp.prompters import aot, fused

    if not fused.compiled_gate_cached(3, 2, 3, 16, 16):  # run alone: build the packages first
        test_compiled_backend_matches_reference_with_one_package_for_every_setting(aot_cache)
    cached, other = LoRSPPrompter(image_size=16, groups=3, rank=2), LoRSPPrompter(image_size=16, groups=3, rank=4)
    for prompter in (cached, other):
        prompter.plan_run(24)  # far below CPU_COMPILE_MIN_STEPS
    assert cached.lif_backend("cpu") == "compile" and other.lif_backend("cpu") == "eager"
    monkeypatch.setattr(aot, "_LOADED", {})  # as a new process: from disk
    monkeypatch.setattr(aot, "_build", lambda *args: pytest.fail("the cached package was built again"))
    eager = LoRSPPrompter(image_size=16, groups=3, rank=2, backend="eager")
    eager.load_state_dict(cached.state_dict())
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(cached.prompt(x), eager.prompt(x), atol=1e-6, rtol=1e-6)
    assert len(aot._LOADED) == 1  # the forward's package, loaded


def test_asking_whether_a_gate_is_built_imports_no_compiler():
    """``backend="auto"`` looks the compiled gate up before every run; doing so must not import inductor, whose
    import logs a CUDA warning into the output of every notebook that trains LoRSP on a CPU."""
    code = ("import sys, torch\n"
            "from lorsp.prompters import build_prompter\n"
            "prompter = build_prompter('lorsp', image_size=16)\n"
            "prompter.plan_run(24)\n"
            "assert prompter.lif_backend('cpu') == 'eager'\n"
            "prompter(torch.rand(2, 3, 16, 16))\n"
            "print(sorted(m for m in ('torch._inductor', 'torch.utils.cpp_extension') if m in sys.modules))\n")
    env = {**os.environ, "LORSP_AOT_CACHE": "/nonexistent/lorsp-aot"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]" and "No CUDA runtime" not in done.stderr


def test_backend_option_is_checked_and_resolved(monkeypatch, tmp_path):
    monkeypatch.setenv("LORSP_AOT_CACHE", str(tmp_path))  # nothing compiled yet
    with pytest.raises(ValueError, match="backend must be one of auto, eager, compile; got 'triton'"):
        LoRSPPrompter(image_size=8, backend="triton")
    with pytest.raises(ValueError, match="shared basis"):
        LoRSPPrompter(image_size=8, backend="compile", shared_basis=False)
    auto = LoRSPPrompter(image_size=8)
    assert auto.backend == "auto" and auto.lif_backend("cpu") == "eager"  # no compiling on CPU by default
    assert LoRSPPrompter(image_size=8, backend="compile").lif_backend("cpu") == "compile"
    assert LoRSPPrompter(image_size=8, backend="eager").lif_backend("cuda") == "eager"
    assert LoRSPPrompter(image_size=8, shared_basis=False).lif_backend("cuda") == "eager"


def test_auto_compiles_on_a_cpu_only_for_runs_planned_long_enough(monkeypatch, tmp_path):
    from lorsp.prompters import fused, fused_compiled

    monkeypatch.setenv("LORSP_AOT_CACHE", str(tmp_path))  # nothing compiled yet
    monkeypatch.setattr(fused_compiled, "_COMPILE_FAILED", False)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)  # a C++ compiler is there
    auto = LoRSPPrompter(image_size=8)
    for steps, expected in ((None, "eager"), (24, "eager"), (fused.CPU_COMPILE_MIN_STEPS - 1, "eager"),
                            (fused.CPU_COMPILE_MIN_STEPS, "compile")):
        auto.plan_run(steps)
        assert auto.lif_backend("cpu") == expected, steps
    assert LoRSPPrompter(image_size=8, backend="eager").lif_backend("cpu") == "eager"
    with pytest.raises(ValueError, match="steps must be None or an integer"):
        auto.plan_run(-1)
    monkeypatch.setattr("shutil.which", lambda name: None)  # no compiler: eager whatever the plan
    assert auto.lif_backend("cpu") == "eager"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/inductor")
    assert fused.compile_cache_dir() == "/somewhere/inductor"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/home/reader/.cache")
    assert fused.compile_cache_dir() == "/home/reader/.cache/lorsp/inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_root")  # as inductor sets it itself
    assert fused.aot_package_dir() == str(tmp_path)
    monkeypatch.delenv("LORSP_AOT_CACHE")
    assert fused.aot_package_dir() == "/home/reader/.cache/lorsp/aot"


def test_the_trainer_plans_the_whole_run(monkeypatch):
    import _train_helpers as helpers
    from lorsp.prompters import lowrank_sparse
    from lorsp.train import train

    short = train(helpers.tiny_config(epochs=1), progress=False)
    assert short["lif_backend"] == "eager"  # 5 steps: far below CPU_COMPILE_MIN_STEPS
    planned = []
    monkeypatch.setattr(lowrank_sparse, "auto_backend",
                        lambda device, steps, cached=False: planned.append(steps) or "eager")
    cut = train(helpers.tiny_config(epochs=2, max_steps=3), progress=False)
    assert cut["steps_completed"] == 3 and set(planned) == {2 * cut["steps_per_epoch"]}  # the whole run's length


def _broken_compiler(monkeypatch):
    from lorsp.prompters import fused_compiled

    def refuse(kind, *args):
        raise RuntimeError(f"no compiler for {kind}")

    monkeypatch.setattr(fused_compiled, "_compiled", refuse)
    monkeypatch.setattr(fused_compiled, "_COMPILE_FAILED", False)
    return fused_compiled


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    fused_compiled = _broken_compiler(monkeypatch)
    prompter = _prompter(0.0, False)
    x, grad_out = torch.rand(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    expected, expected_grads = _prompt_and_grads(  # the eager fused path
        prompter, x, grad_out, lambda x: fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter)))
    with pytest.warns(RuntimeWarning, match="torch.compile of LoRSP's LIF gate failed.*no compiler for forward"):
        delta = fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter),
                                   backend="compile", fallback=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process, not at every call
        (delta * grad_out).sum().backward()
        again = fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter),
                                   backend="compile", fallback=True)
    torch.testing.assert_close(delta, expected, atol=0, rtol=0)
    torch.testing.assert_close(again, expected, atol=0, rtol=0)
    _assert_grads_close(prompter, expected_grads, atol=0, scaled=False)
    assert fused_compiled._COMPILE_FAILED and not fused_compiled.compile_available("cuda")  # auto stops asking


def test_compile_failure_raises_without_fallback(monkeypatch):
    _broken_compiler(monkeypatch)
    prompter = _prompter(0.0, False)
    with pytest.raises(RuntimeError, match="no compiler for forward"):
        fused_lorsp_prompt(torch.rand(1, 3, 16, 16), *_params(prompter), *_lif_args(prompter), backend="compile")


def test_compiled_backward_failure_falls_back(monkeypatch):
    from lorsp.prompters import fused_compiled

    prompter = _prompter(None, False)
    x, grad_out = torch.rand(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    _, expected_grads = _prompt_and_grads(prompter, x, grad_out)  # the reference (fused=False)
    monkeypatch.setattr(fused_compiled, "_COMPILE_FAILED", False)
    # the forward "compiles" (its functional form, run eagerly); the backward's compiler fails
    monkeypatch.setattr(fused_compiled, "_compiled", lambda kind, inputs, groups, rank: functools.partial(
        fused_compiled._compiled_forward_impl, groups=groups, rank=rank) if kind == "forward" else 1 / 0)
    delta = fused_lorsp_prompt(x, *_params(prompter), *_lif_args(prompter),
                               backend="compile", fallback=True)
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"):
        (delta * grad_out).sum().backward()
    _assert_grads_close(prompter, expected_grads, scaled=False)


