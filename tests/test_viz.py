"""The method chapters' figures and widget callbacks (lorsp.viz) and the scale selection (lorsp.scale)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from lorsp import viz
from lorsp.prompters import build_prompter
from lorsp.scale import SCALE_ENV, SCALES, Scale, banner_markdown, current_scale, get_scale, scale_banner


# ---------------------------------------------------------------------------------------------------------
# scale
# ---------------------------------------------------------------------------------------------------------
def test_scale_default_is_smoke(monkeypatch):
    monkeypatch.delenv(SCALE_ENV, raising=False)
    assert current_scale() == "smoke"
    assert isinstance(get_scale(), Scale) and get_scale().name == "smoke"


@pytest.mark.parametrize("value,expected", [("mini", "mini"), (" PAPER ", "paper"), ("Smoke", "smoke"), ("", "smoke")])
def test_scale_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv(SCALE_ENV, value)
    assert current_scale() == expected
    assert get_scale().name == expected


@pytest.mark.parametrize("value", ["huge", "mini2", "0"])
def test_invalid_scale_names_the_variable_and_the_choices(monkeypatch, value):
    monkeypatch.setenv(SCALE_ENV, value)
    with pytest.raises(ValueError) as error:
        current_scale()
    message = str(error.value)
    assert SCALE_ENV in message and repr(value) in message
    for name in SCALES:
        assert name in message


def test_explicit_scale_beats_environment(monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "paper")
    assert current_scale("mini") == "mini"
    with pytest.raises(ValueError, match=SCALE_ENV):
        current_scale("tiny")


def test_banner_states_facts_and_fallbacks(monkeypatch):
    monkeypatch.delenv(SCALE_ENV, raising=False)
    facts = {"data": "4 ImageNet sample images", "weights": "random (no checkpoint)", "images": 4, "epochs": 2,
             "fallbacks": ["synthetic images: no imagenet-samples folder", "random weights: no MobileNetV2 file"]}
    banner = scale_banner(facts)
    text = str(banner)
    assert "smoke" in text and "LORSP_SCALE" in text
    for value in ("4 ImageNet sample images", "random (no checkpoint)", "synthetic images", "random weights"):
        assert value in text and value in banner._repr_html_()
    assert "| epochs | 2 |" in text
    clean = banner_markdown({"data": "CIFAR-10", "fallbacks": []}, scale="mini")
    assert "`mini`" in clean and "none" in clean and "Fallbacks taken" not in clean


def test_banner_escapes_html_and_takes_scale_from_facts():
    banner = scale_banner({"scale": "paper", "data": "<script>x</script>"})
    assert "<script>x" not in banner._repr_html_() and "&lt;script&gt;" in banner._repr_html_()
    assert "`paper`" in str(banner)


def test_banner_rejects_non_dict_and_bad_scale():
    with pytest.raises(ValueError, match="dict of facts"):
        scale_banner(["data"])
    with pytest.raises(ValueError, match=SCALE_ENV):
        scale_banner({"scale": "enormous"})


# ---------------------------------------------------------------------------------------------------------
# LIF dynamics
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau,v_threshold,v_reset,amplitude", [(4.0, 0.5, 0.0, 1.0), (1.5, 0.0, -0.5, -1.0),
                                                               (10.0, 2.0, 0.2, 3.0)])
def test_lif_slider_callback_gives_a_figure(tau, v_threshold, v_reset, amplitude):
    fig = viz.plot_lif_response(tau=tau, v_threshold=v_threshold, v_reset=v_reset, amplitude=amplitude, steps=20)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9  # 3 rows × 3 inputs
    assert f"tau={tau:g}" in fig._suptitle.get_text()


def test_lif_callback_rejects_invalid_tau():
    with pytest.raises(ValueError, match="tau"):
        viz.plot_lif_response(tau=1.0)


def _shown_png(explorer) -> str:
    """The one picture the explorer's Output shows now (fails if it shows anything else or more than one)."""
    outputs = explorer.output.outputs
    assert len(outputs) == 1, f"the Output holds {len(outputs)} outputs, expected exactly one figure: {outputs}"
    assert outputs[0]["output_type"] == "display_data", outputs[0]
    return outputs[0]["data"]["image/png"]


def test_slider_explorer_redraws_the_lif_figure_when_a_slider_moves():
    widgets = pytest.importorskip("ipywidgets")
    calls = []

    def plot(**values):
        calls.append(values)
        return viz.plot_lif_response(**values)

    tau = widgets.FloatSlider(value=2.0, min=1.1, max=10.0)
    explorer = viz.slider_explorer(plot, tau=tau, v_threshold=widgets.FloatSlider(value=0.5),
                                   v_reset=widgets.fixed(0.0), amplitude=1.0, kinds=("constant",), steps=10, seed=0)
    assert calls == [dict(tau=2.0, v_threshold=0.5, v_reset=0.0, amplitude=1.0, kinds=("constant",), steps=10, seed=0)]
    assert list(explorer.children[:2]) == [tau, explorer.children[1]] and explorer.children[-1] is explorer.output
    before = _shown_png(explorer)
    first_figure = explorer.figure
    tau.value = 6.0  # moving the slider calls the plot function again and replaces the picture
    assert len(calls) == 2 and calls[-1]["tau"] == 6.0 and explorer.draws == 2
    after = _shown_png(explorer)
    assert after != before
    assert explorer.figure is not first_figure and "tau=6" in explorer.figure._suptitle.get_text()
    assert "tau=6" in explorer.output.outputs[0]["data"]["text/plain"]
    explorer.children[1].value = 0.7
    assert calls[-1] == dict(tau=6.0, v_threshold=0.7, v_reset=0.0, amplitude=1.0, kinds=("constant",), steps=10,
                             seed=0)
    assert _shown_png(explorer) not in (before, after)


def test_slider_explorer_carries_its_figure_for_pages_without_a_kernel():
    """A cell's result shows the widget in JupyterLab and, where no widget can live (the rendered book), the
    PNG of the figure at the current values."""
    widgets = pytest.importorskip("ipywidgets")
    import base64

    explorer = viz.slider_explorer(viz.plot_lif_response, tau=widgets.FloatSlider(value=4.0, min=1.1, max=10.0),
                                   kinds=("constant",), steps=10)
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"] == _shown_png(explorer)
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert bundle["text/plain"].startswith("figure: LIF with tau=4")


def test_slider_explorer_closes_the_pyplot_figures_it_replaces():
    widgets = pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot(level=0):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, level])
        return fig

    plt.close("all")   # figures other tests left open are not this explorer's
    level = widgets.IntSlider(value=1, min=0, max=5)
    explorer = viz.slider_explorer(plot, level=level)
    first = explorer.figure
    for value in (2, 3, 4):
        level.value = value
    assert not plt.fignum_exists(first.number)
    assert plt.get_fignums() == [explorer.figure.number]  # only the figure shown is kept
    plt.close("all")


def test_slider_explorer_shows_an_error_instead_of_a_figure():
    widgets = pytest.importorskip("ipywidgets")
    tau = widgets.FloatSlider(value=2.0, min=0.5, max=10.0)
    explorer = viz.slider_explorer(viz.plot_lif_response, tau=tau, kinds=("constant",), steps=5)
    tau.value = 0.8  # Eq. 1 needs tau > 1: the LIF refuses it
    (output,) = explorer.output.outputs
    assert output["output_type"] == "stream" and "tau" in output["text"] and "Error" in output["text"]
    tau.value = 3.0  # and the next good value draws again
    assert _shown_png(explorer)


def test_slider_explorer_rejects_what_is_not_a_control():
    widgets = pytest.importorskip("ipywidgets")
    with pytest.raises(TypeError, match="'panel'.*without a value"):
        viz.slider_explorer(viz.plot_lif_response, panel=widgets.HBox())
    with pytest.raises(TypeError, match="callable"):
        viz.slider_explorer("plot_lif_response", tau=widgets.FloatSlider())


def test_shown_path_hides_this_machine(tmp_path):
    assert viz.shown_path(viz.display.REPO_ROOT / "results" / "mini" / "x" / "prompt.safetensors") == \
        "results/mini/x/prompt.safetensors"
    assert viz.shown_path(tmp_path / "imagenet-samples", root=tmp_path) == "<data root>/imagenet-samples"
    elsewhere = viz.shown_path(tmp_path / "a" / "b" / "c.txt", root=tmp_path / "other")
    assert elsewhere == "…/b/c.txt" and str(tmp_path) not in elsewhere


def test_constant_input_fires_with_the_hand_computed_period():
    # tau=4, V_th=0.5, X=1: H = 0.25, 0.4375, 0.578 -> a spike every 3rd step, reset to 0, again.
    trace = viz.lif_response(viz.input_current("constant", 1.0, 30), tau=4.0, v_threshold=0.5, v_reset=0.0)
    assert trace.spikes.tolist() == [0.0, 0.0, 1.0] * 10
    torch.testing.assert_close(trace.membrane[:3], torch.tensor([0.25, 0.4375, 0.578125]))


def test_input_current_kinds_and_errors():
    for kind in viz.INPUT_KINDS:
        x = viz.input_current(kind, amplitude=2.0, steps=16)
        assert x.shape == (16,) and torch.isfinite(x).all()
    assert torch.equal(viz.input_current("noisy", seed=3), viz.input_current("noisy", seed=3))
    with pytest.raises(ValueError, match="kind"):
        viz.input_current("square")
    with pytest.raises(ValueError, match="steps"):
        viz.input_current("constant", steps=0)


def test_firing_rate_grid_falls_with_threshold_and_plots():
    grid = viz.firing_rate_grid([1.5, 4.0, 8.0], [0.0, 0.5, 1.0], amplitude=1.0, kind="noisy", steps=60)
    assert len(grid) == 9 and grid.firing_rate.between(0, 1).all()
    table = grid.pivot(index="tau", columns="v_threshold", values="firing_rate")
    assert (table.diff(axis=1).iloc[:, 1:] <= 1e-12).all().all()
    assert table[0.5].iloc[0] > table[0.5].iloc[-1]  # a slower neuron (larger tau) fires less
    assert isinstance(viz.plot_firing_rate_sweep(grid, title="t"), Figure)
    assert isinstance(viz.plot_spike_raster(amplitudes=[0.2, 0.8, 1.5], steps=10), Figure)


def test_snntorch_comparison_agrees():
    pytest.importorskip("snntorch")
    table = viz.snntorch_comparison(viz.input_current("noisy", 1.0, 30, seed=2), tau=3.0, v_threshold=0.4)
    assert (table["S_t (lorsp)"] == table["S_t (snntorch)"]).all()
    assert np.allclose(table["H_t (lorsp)"], table["mem (snntorch)"], atol=1e-6)
    with pytest.raises(ValueError, match="one sequence"):
        viz.snntorch_comparison(torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------------------------
# prompt factorisation
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shown():
    prompter, note = viz.display_prompter(image_size=16, groups=3, rank=2, seed=1)
    images = viz.sample_images(2, 16, root="/nonexistent-lorsp-data-root").images
    return prompter, note, images


def test_display_prompter_is_random_nonzero_and_says_so(shown):
    prompter, note, images = shown
    assert "untrained" in note and "display" in note and "B = 0" in note
    assert prompter.factors.basis.abs().sum() > 0
    assert prompter.prompt(images).abs().sum() > 0
    # LoRSP's own init stays untouched: B = 0 gives δ = 0
    assert build_prompter("lorsp", image_size=16, groups=3, rank=2).prompt(images).abs().sum() == 0


def test_sample_images_fall_back_to_synthetic_and_say_so(tmp_path):
    samples = viz.sample_images(3, (12, 20), root=tmp_path)
    assert samples.synthetic and "synthetic" in samples.note and "imagenet-samples" in samples.note
    assert samples.images.shape == (3, 3, 12, 20)
    assert 0 <= samples.images.min() and samples.images.max() <= 1


def test_sample_images_read_real_files(tmp_path):
    from PIL import Image

    folder = tmp_path / "imagenet-samples"
    folder.mkdir()
    for i, name in enumerate(["n01440764_tench", "n01443537_goldfish", "n03345487_fire_engine"]):
        Image.fromarray(np.full((30, 40, 3), 60 * i, dtype=np.uint8)).save(folder / f"{name}.JPEG")
    samples = viz.sample_images(2, 16, root=tmp_path, seed=0)
    assert not samples.synthetic and samples.source == "imagenet-samples"
    assert samples.images.shape == (2, 3, 16, 16)
    assert set(samples.names) <= {"tench", "goldfish", "fire engine"} and len(set(samples.names)) == 2
    (folder / "n04004767_printer.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="n04004767_printer"):
        viz.sample_images(4, 16, root=tmp_path)


@pytest.mark.parametrize("tau,v_threshold,v_reset,image_index", [(4.0, 0.0, 0.0, 0), (1.5, 0.01, -0.01, 1),
                                                                 (8.0, -0.02, 0.0, 1)])
def test_prompt_slider_callback_gives_a_figure(shown, tau, v_threshold, v_reset, image_index):
    prompter, _, images = shown
    fig = viz.plot_prompt_explorer(prompter, images, tau, v_threshold, v_reset, image_index)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    groups = prompter.groups
    assert sum(t.startswith("F_") for t in titles) == groups and sum(t.startswith("S_") for t in titles) == groups
    assert any(t.startswith("δ:") for t in titles) and "x + δ" in titles
    assert f"tau={tau:g}" in fig._suptitle.get_text()
    assert prompter.lif.tau == 4.0  # the callback works on a copy


def test_prompt_explorer_rejects_bad_index(shown):
    prompter, _, images = shown
    with pytest.raises(ValueError, match="image_index"):
        viz.plot_prompt_explorer(prompter, images, image_index=5)


def test_anatomy_figure_has_every_panel(shown):
    prompter, _, images = shown
    fig = viz.plot_prompt_anatomy(prompter, images, ["a", "b"])
    assert len(fig.axes) == 2 * (1 + 2 * prompter.groups + 2)


def test_sparsity_grid_rises_with_threshold(shown):
    prompter, _, images = shown
    grid = viz.sparsity_grid(prompter, images, [2.0, 4.0], [-1e6, 0.0, 0.01, 1e6])
    for _, rows in grid.groupby("tau"):
        assert rows.sort_values("v_threshold").sparsity.is_monotonic_increasing
    assert grid.query("v_threshold == 1e6").sparsity.eq(1.0).all()      # nothing fires: δ = 0
    assert grid.query("v_threshold == -1e6").firing_rate.eq(1.0).all()  # everything fires
    assert isinstance(viz.plot_sparsity_heatmap(grid), Figure)


def test_all_spikes_on_is_lpf(shown):
    prompter, _, images = shown
    all_on = viz.with_lif_settings(prompter, tau=4.0, v_threshold=-1e9, v_reset=0.0)
    torch.testing.assert_close(all_on.prompt(images), prompter.factors(images).mean(0))


def test_factor_correlation_known_cases():
    base = torch.randn(1, 2, 3, 4, 5)
    factors = torch.cat([base, 2 * base, -base], 0)  # [G=3, N=2, ...]
    corr = viz.factor_correlation(factors)
    np.testing.assert_allclose(corr, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-10)
    assert isinstance(viz.plot_factor_correlation(corr), Figure)
    with pytest.raises(ValueError, match=r"\[G, N, C, H, W\]"):
        viz.factor_correlation(torch.zeros(3, 4))


def test_prompt_ranks_respect_the_factor_bound(shown):
    prompter, _, images = shown
    ranks = viz.prompt_ranks(prompter, images)
    factor_columns = [f"F_{g + 1}" for g in range(prompter.groups)] + ["mean of F (LPF)"]
    assert (ranks[factor_columns] <= prompter.rank).all().all()
    assert (ranks["δ (LoRSP)"] <= ranks["min(H, W)"]).all()


def test_trained_weights_are_found_and_loaded(tmp_path):
    from safetensors.torch import save_file

    trained = build_prompter("lorsp", image_size=16, groups=2, rank=3)
    with torch.no_grad():
        trained.factors.basis.normal_()
    state = {f"prompter.{k}": v.contiguous() for k, v in trained.state_dict().items()}
    state["head.weight"] = torch.zeros(4, 8)
    run = tmp_path / "runs" / "smoke" / "run1"
    run.mkdir(parents=True)
    save_file(state, str(run / "prompt.safetensors"),
              metadata={"method": "lorsp", "image_size": "16", "backbone": "mobilenetv2", "dataset": "cifar10",
                        "prompter_kwargs": json.dumps({"groups": 2, "rank": 3, "tau": 2.5, "v_threshold": 0.1})})
    save_file({"prompter.program": torch.zeros(3)}, str(tmp_path / "runs" / "other.safetensors"),
              metadata={"method": "pad"})
    (tmp_path / "runs" / "junk.safetensors").write_bytes(b"garbage")

    found = viz.find_trained_prompt_weights(roots=[tmp_path / "runs"])
    assert found == run / "prompt.safetensors"
    assert viz.find_trained_prompt_weights(roots=[tmp_path / "runs"], rank=4) is None
    assert viz.find_trained_prompt_weights(roots=[tmp_path / "nothing"]) is None

    prompter, note = viz.display_prompter(weights=found)
    assert "trained" in note and "cifar10" in note
    assert (prompter.groups, prompter.rank, prompter.image_size) == (2, 3, (16, 16))
    assert (prompter.lif.tau, prompter.lif.v_threshold) == (2.5, 0.1)
    torch.testing.assert_close(prompter.factors.basis, trained.factors.basis)


def test_weights_without_factors_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"prompter.program": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="no LoRSP factors"):
        viz.display_prompter(weights=path)


# ---------------------------------------------------------------------------------------------------------
# parameter counting
# ---------------------------------------------------------------------------------------------------------
def test_count_grid_closed_form_equals_module():
    grid = viz.lorsp_count_grid([1, 4], [2, 4], image_size=224)
    assert (grid.closed_form == grid.module).all()
    assert grid.query("groups == 4 and rank == 4").closed_form.item() == 6272
    assert isinstance(viz.plot_count_grid(grid, reference={"ILM-VP (paper)": "147K", "x": 1000}), Figure)


def test_count_table_never_invents_a_number():
    table = viz.count_table([dict(label="LoRSP", method="lorsp", kwargs=dict(groups=2, rank=2)),
                             dict(label="nope", method="no-such-prompter")])
    lorsp_row, missing = table.iloc[0], table.iloc[1]
    assert lorsp_row.available and lorsp_row.closed_form == lorsp_row.module == 2240 and lorsp_row.equal
    assert not missing.available and pd.isna(missing.closed_form) and pd.isna(missing.module)


def test_linear_head_count():
    assert viz.linear_head_param_count(768, 100) == 76_900
    assert viz.linear_head_param_count(768, 100) == sum(p.numel() for p in torch.nn.Linear(768, 100).parameters())


@pytest.mark.parametrize("count,reported,expected", [(6272, "6.27K", True), (2240, "2.24K", True),
                                                     (147456, "147K", True), (73728, "74K", True),
                                                     (14336, "6.27K", False), (5376, "5.38K", True),
                                                     (1_500_000, "1.5M", True), (999, "999", True)])
def test_reported_matches(count, reported, expected):
    assert viz.reported_matches(count, reported) is expected


def test_reported_count_parsing_errors():
    assert viz.parse_reported_count("6.27K") == (6270.0, 2)
    assert viz.format_like_reported(6272, "6.27K") == "6.27K"
    with pytest.raises(ValueError, match="parameter count"):
        viz.parse_reported_count("many")


def test_trained_weights_search_order(tmp_path):
    from safetensors.torch import save_file

    def save(folder, groups, trained=True):
        prompter = build_prompter("lorsp", image_size=8, groups=groups, rank=2)
        if trained:  # B left its zero init
            torch.nn.init.normal_(prompter.factors.basis)
        folder.mkdir(parents=True)
        save_file({f"prompter.{k}": v.contiguous() for k, v in prompter.state_dict().items()},
                  str(folder / "prompt.safetensors"), metadata={"method": "lorsp", "image_size": "8"})
        return folder / "prompt.safetensors"

    first, second = save(tmp_path / "results" / "mini" / "a", 2), save(tmp_path / "runs" / "smoke" / "b", 2)
    roots = [tmp_path / "results" / "paper", tmp_path / "results" / "mini", tmp_path / "runs" / "smoke"]
    assert viz.find_trained_prompt_weights(roots=roots) == first          # the larger scale wins
    assert viz.find_trained_prompt_weights(roots=roots[::-1]) == second
    assert viz.find_trained_prompt_weights(roots=roots, groups=3) is None
    # a prompt whose basis never left zero (δ = 0) is not a trained prompt to show
    untrained = save(tmp_path / "results" / "paper" / "c", 2, trained=False)
    assert viz.find_trained_prompt_weights(roots=roots) == first != untrained
