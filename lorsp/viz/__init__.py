"""Figures and widget callbacks of the book's method chapters.

Every figure function returns a :class:`matplotlib.figure.Figure` (never shown, never registered with pyplot,
so a notebook displays it exactly once); the tables are pandas DataFrames. The chapters only call them.

- Sliders: :func:`slider_explorer` (``plot_fn`` + named sliders → a :class:`SliderExplorer` widget whose
  figure redraws in place when a slider moves; the rendered book shows its figure at the default values).

- "LIF dynamics" (Eqs. 1–3): :func:`input_current`, :func:`lif_response`, :func:`plot_lif_response` (the
  slider callback), :func:`plot_spike_raster`, :func:`firing_rate_grid`, :func:`plot_firing_rate_sweep`,
  :func:`snntorch_comparison`.
- "Prompt factorisation" (Eqs. 4–9): :func:`sample_images`, :func:`find_trained_prompt_weights`,
  :func:`display_prompter`, :func:`with_lif_settings`, :func:`plot_prompt_anatomy`, :func:`prompt_ranks`,
  :func:`sparsity_grid`, :func:`plot_sparsity_heatmap`, :func:`factor_correlation` and
  :func:`plot_factor_correlation` (Fig. 3b), :func:`plot_prompt_explorer` (the slider callback).
- "Parameter counting" (Eqs. 13–15): :func:`lorsp_count_grid`, :func:`plot_count_grid`, :func:`count_table`,
  :func:`linear_head_param_count`, :func:`reported_matches` (our count at the paper's printed precision).

The functions live in one module per job (:mod:`.display`, :mod:`.sliders`, :mod:`.lif_plots`, :mod:`.samples`,
:mod:`.prompt_weights`, :mod:`.prompt_plots`, :mod:`.counting`); this package re-exports them.
"""
from __future__ import annotations

from .counting import (count_table, format_like_reported, linear_head_param_count, lorsp_count_grid,
                       parse_reported_count, plot_count_grid, reported_matches)
from .display import shown_path
from .lif_plots import (INPUT_KINDS, firing_rate_grid, input_current, lif_response, plot_firing_rate_sweep,
                        plot_lif_response, plot_spike_raster, snntorch_comparison)
from .prompt_plots import (factor_correlation, plot_factor_correlation, plot_prompt_anatomy, plot_prompt_explorer,
                           plot_sparsity_heatmap, prompt_ranks, sparsity_grid)
from .prompt_weights import display_prompter, find_trained_prompt_weights, with_lif_settings
from .samples import ShownImages, sample_images
from .sliders import SliderExplorer, slider_explorer

__all__ = [
    "SliderExplorer", "slider_explorer", "shown_path",
    "INPUT_KINDS", "input_current", "lif_response", "plot_lif_response", "plot_spike_raster",
    "firing_rate_grid", "plot_firing_rate_sweep",
    "ShownImages", "sample_images", "display_prompter", "find_trained_prompt_weights",
    "with_lif_settings", "plot_prompt_anatomy", "sparsity_grid", "plot_sparsity_heatmap", "factor_correlation",
    "plot_factor_correlation", "plot_prompt_explorer",
    "lorsp_count_grid", "plot_count_grid", "count_table", "linear_head_param_count",
    "snntorch_comparison", "prompt_ranks", "parse_reported_count", "format_like_reported", "reported_matches",
]
