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
"""
from __future__ import annotations

import base64
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .lif import LIF, LIFTrace
from .prompters import LoRSPPrompter, build_prompter, prompt_param_count
from .prompters.registry import as_size

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

_REPO = Path(__file__).resolve().parent.parent


def _ensure_notebook_display() -> None:
    """Inside IPython, make a returned :class:`~matplotlib.figure.Figure` display as a PNG.

    The figures here are not pyplot figures (so a notebook shows each exactly once), and matplotlib-inline
    only registers its PNG formatter when ``%matplotlib inline`` runs; this registers it unless a formatter
    for figures is already set. Outside IPython it does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    png = shell.display_formatter.formatters.get("image/png")
    if png is None:
        return
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, {"png"})


_ensure_notebook_display()


def shown_path(path, root=None) -> str:
    """``path`` as a page of the book prints it, without this machine's folders: relative to the checkout when
    inside it (``data/imagenet-samples``, ``results/mini/.../prompt.safetensors``), else relative to the data
    root (``root`` or :func:`lorsp.data.data_root`: ``<data root>/imagenet-samples``), else ``…/`` and its
    last two parts."""
    from .data import data_root

    path = Path(path).resolve()
    for base, label in ((_REPO, ""), (data_root(root), "<data root>/")):
        try:
            return label + path.relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            continue
    return "…/" + "/".join(path.parts[-2:])


# ----------------------------------------------------------------------------------------------------------
# Sliders
# ----------------------------------------------------------------------------------------------------------
def _figure_png(fig) -> bytes:
    """``fig`` as PNG bytes, drawn as the notebook draws every other figure (IPython's ``print_figure``,
    tight bounding box)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def _close(fig) -> None:
    """Free a figure no longer shown: a pyplot figure is closed (else pyplot keeps it and it piles up);
    a plain :class:`Figure` (as this module's functions return) is only dropped."""
    if getattr(getattr(fig, "canvas", None), "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


def _figure_title(fig) -> str:
    title = getattr(fig, "_suptitle", None)
    text = title.get_text() if title is not None else ""
    return f"figure: {text}" if text else "figure"


class SliderExplorer(widgets.VBox):
    """Sliders above one figure: each time a slider's value changes, ``plot_fn(**values)`` draws a new figure,
    which *replaces* the one shown (the :class:`ipywidgets.Output` below the sliders holds exactly one
    picture, swapped in one state update: no flicker, nothing piles up) and the old figure is closed.

    Built by :func:`slider_explorer`. ``controls`` maps each keyword of ``plot_fn`` to a widget with a
    ``value`` (a slider, a dropdown, ``widgets.fixed(v)``) or to a plain value (kept fixed). ``figure`` is
    the figure shown now, ``draws`` counts the calls of ``plot_fn``. A ``plot_fn`` that raises shows the
    error's message instead of a figure (the sliders keep working).

    Shown as a notebook cell's result, the widget carries the current figure as a PNG beside the widget
    view: JupyterLab shows the live widget, while a page rendered without a kernel (the book, built with
    ``nb_mime_priority_overrides`` dropping the widget view) shows the figure at the default values.
    """

    def __init__(self, plot_fn, controls: dict[str, Any]):
        if not callable(plot_fn):
            raise TypeError(f"plot_fn must be callable, got {type(plot_fn).__name__}")
        self.plot_fn = plot_fn
        self.controls = dict(controls)
        sliders = []
        for name, control in self.controls.items():
            if isinstance(control, widgets.Widget) and not isinstance(control, widgets.ValueWidget):
                raise TypeError(f"control {name!r} is a {type(control).__name__} without a value; give a slider "
                                f"(or another value widget), widgets.fixed(value) or a plain value")
            if isinstance(control, widgets.ValueWidget):
                sliders.append(control)
        self.output = widgets.Output()
        self.figure = None
        self.draws = 0
        self._png: bytes | None = None
        super().__init__(children=[*sliders, self.output])
        for slider in sliders:
            slider.observe(self._on_change, names="value")
        self.redraw()

    @property
    def values(self) -> dict[str, Any]:
        """The keyword arguments of the next ``plot_fn`` call: every control's current value."""
        return {name: getattr(control, "value", control) if isinstance(control, (widgets.ValueWidget, widgets.fixed))
                else control for name, control in self.controls.items()}

    def _on_change(self, change) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Call ``plot_fn`` with the current values and put its figure in place of the one shown."""
        self.draws += 1
        try:
            fig = self.plot_fn(**self.values)
            png = _figure_png(fig)
        except Exception as error:  # shown to the reader instead of vanishing into the kernel log
            self._png = None
            self.output.outputs = ({"output_type": "stream", "name": "stderr",
                                    "text": f"{type(error).__name__}: {error}\n"},)
            return
        old, self.figure, self._png = self.figure, fig, png
        self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": base64.b64encode(png).decode("ascii"),
                                         "text/plain": _figure_title(fig)}},)
        if old is not None and old is not fig:
            _close(old)

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        if self._png is not None:
            bundle["image/png"] = base64.b64encode(self._png).decode("ascii")
            bundle["text/plain"] = _figure_title(self.figure)
        return bundle


def slider_explorer(plot_fn, /, **controls) -> SliderExplorer:
    """Sliders that redraw ``plot_fn``'s figure: ``slider_explorer(plot_lif_response, tau=FloatSlider(...),
    steps=widgets.fixed(40))``. Each keyword is an argument of ``plot_fn`` given as a value widget, as
    ``widgets.fixed(v)`` or as a plain value; ``plot_fn`` returns a :class:`~matplotlib.figure.Figure`.
    The first figure is drawn at once, at the widgets' initial values. See :class:`SliderExplorer`."""
    return SliderExplorer(plot_fn, controls)


def _seaborn():
    import seaborn as sns  # imported lazily: only the figure functions need it

    return sns


# ----------------------------------------------------------------------------------------------------------
# LIF dynamics (Eqs. 1–3)
# ----------------------------------------------------------------------------------------------------------
INPUT_KINDS = ("constant", "pulses", "sine", "noisy")


def input_current(kind: str = "constant", amplitude: float = 1.0, steps: int = 40, seed: int = 0) -> torch.Tensor:
    """An input sequence X_1..X_T ``[steps]`` for the LIF neuron.

    ``constant``: X_t = amplitude; ``pulses``: amplitude on every 8th step for 3 steps, else 0;
    ``sine``: amplitude·(1 + sin(2πt/20))/2; ``noisy``: amplitude + N(0, (amplitude/2)²) with ``seed``.
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    amplitude = float(amplitude)
    t = torch.arange(steps, dtype=torch.float32)
    if kind == "constant":
        return torch.full((steps,), amplitude)
    if kind == "pulses":
        return amplitude * ((t % 8) < 3).float()
    if kind == "sine":
        return amplitude * (1 + torch.sin(2 * math.pi * t / 20)) / 2
    generator = torch.Generator().manual_seed(seed)
    return amplitude + 0.5 * abs(amplitude) * torch.randn(steps, generator=generator)


def lif_response(inputs: torch.Tensor, tau: float = 4.0, v_threshold: float = 0.5,
                 v_reset: float = 0.0) -> LIFTrace:
    """Run :class:`lorsp.LIF` (Eqs. 1–3) on ``inputs [T, ...]`` and return its trace (spikes, H_t, V_t)."""
    return LIF(tau=tau, v_threshold=v_threshold, v_reset=v_reset)(torch.as_tensor(inputs, dtype=torch.float32),
                                                                    return_trace=True)


def plot_lif_response(tau: float = 4.0, v_threshold: float = 0.5, v_reset: float = 0.0, amplitude: float = 1.0,
                      kinds: Sequence[str] = ("constant", "pulses", "noisy"), steps: int = 40,
                      seed: int = 0) -> Figure:
    """The slider callback of "LIF dynamics": one column per input kind, rows input X_t, membrane, spikes.

    The membrane row draws H_t (Eq. 1, before the reset) as dots and V_t (Eq. 3, after it) as a line, with
    V_th dashed; the spike row marks S_t = 1 (Eq. 2). The title gives the firing rate of each input.
    """
    kinds = list(kinds)
    fig = Figure(figsize=(3.6 * len(kinds), 6.2), layout="constrained")
    axes = fig.subplots(3, len(kinds), sharex=True, squeeze=False)
    t = np.arange(1, steps + 1)
    for col, kind in enumerate(kinds):
        x = input_current(kind, amplitude, steps, seed)
        trace = lif_response(x, tau, v_threshold, v_reset)
        spikes = trace.spikes.numpy()
        ax_in, ax_v, ax_s = axes[:, col]
        ax_in.step(t, x.numpy(), where="mid", color="C0")
        low, high = min(0.0, x.min().item()), max(x.max().item(), v_threshold, 0.0)
        pad = 0.1 * (high - low or 1.0)
        ax_in.set_ylim(low - pad, high + pad)
        ax_in.set_title(f"{kind} input — firing rate {spikes.mean():.2f}")
        ax_v.plot(t, trace.voltage.numpy(), color="C1", label="V_t (after reset, Eq. 3)")
        ax_v.plot(t, trace.membrane.numpy(), ".", color="C2", label="H_t (charged, Eq. 1)")
        ax_v.axhline(v_threshold, ls="--", color="k", lw=1, label="V_th")
        ax_v.axhline(v_reset, ls=":", color="grey", lw=1, label="V_reset")
        fired = t[spikes > 0]
        ax_s.vlines(fired, 0, 1, color="C3")
        ax_s.set_ylim(0, 1.2)
        ax_s.set_yticks([])
        ax_s.set_xlabel("time step t")
        if col == 0:
            ax_in.set_ylabel("input X_t")
            ax_v.set_ylabel("membrane")
            ax_s.set_ylabel("spikes S_t")
            ax_v.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"LIF with tau={tau:g}, V_th={v_threshold:g}, V_reset={v_reset:g}, amplitude={amplitude:g}")
    return fig


def plot_spike_raster(amplitudes: Sequence[float] = tuple(np.linspace(0.2, 2.0, 24)), tau: float = 4.0,
                      v_threshold: float = 0.5, v_reset: float = 0.0, steps: int = 40) -> Figure:
    """Spike raster of one LIF neuron per constant input amplitude (Eqs. 1–3): stronger input fires sooner
    and more often. Under a constant input X, Eq. 1 drives the membrane from V_reset towards X, so an input
    that does not exceed V_th never fires."""
    amplitudes = torch.as_tensor(list(amplitudes), dtype=torch.float32)
    inputs = amplitudes.expand(steps, -1)  # [T, neurons]
    spikes = lif_response(inputs, tau, v_threshold, v_reset).spikes.numpy()
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ts, ns = np.nonzero(spikes)
    ax.scatter(ts + 1, amplitudes.numpy()[ns], marker="|", s=60, color="k")
    ax.set_xlabel("time step t")
    ax.set_ylabel("constant input X")
    ax.set_xlim(0, steps + 1)
    ax.axhline(v_threshold, ls="--", color="C3", lw=1, label="X = V_th (below: never fires)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"spike raster, one neuron per input (tau={tau:g}, V_th={v_threshold:g})")
    return fig


def firing_rate_grid(taus: Iterable[float], thresholds: Iterable[float], amplitude: float = 1.0,
                     kind: str = "noisy", steps: int = 100, v_reset: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Firing rate (share of the ``steps`` with a spike) of the LIF for every (tau, v_threshold) pair.

    Columns ``tau, v_threshold, firing_rate``; one LIF run per pair on the same input.
    """
    x = input_current(kind, amplitude, steps, seed)
    rows = []
    for tau in taus:
        for v_threshold in thresholds:
            spikes = lif_response(x, float(tau), float(v_threshold), v_reset).spikes
            rows.append(dict(tau=float(tau), v_threshold=float(v_threshold), firing_rate=spikes.mean().item()))
    return pd.DataFrame(rows)


def plot_firing_rate_sweep(grid: pd.DataFrame, title: str = "") -> Figure:
    """Left: firing rate vs tau, one line per threshold; right: the same grid as a heatmap (seaborn)."""
    sns = _seaborn()
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_line, ax_heat = fig.subplots(1, 2)
    sns.lineplot(data=grid, x="tau", y="firing_rate", hue="v_threshold", marker="o", palette="viridis",
                 ax=ax_line)
    ax_line.set_ylabel("firing rate")
    ax_line.legend(title="V_th", fontsize=8)
    table = grid.pivot(index="v_threshold", columns="tau", values="firing_rate").sort_index(ascending=False)
    sns.heatmap(table, annot=True, fmt=".2f", cmap="mako", vmin=0, vmax=1, ax=ax_heat,
                xticklabels=[f"{v:g}" for v in table.columns], yticklabels=[f"{v:g}" for v in table.index])
    ax_heat.set_xlabel("tau")
    ax_heat.set_ylabel("V_th")
    if title:
        fig.suptitle(title)
    return fig


def snntorch_comparison(inputs: torch.Tensor, tau: float = 4.0, v_threshold: float = 0.5) -> pd.DataFrame:
    """Our LIF (hard reset to 0) beside snntorch's ``Leaky(beta=1-1/tau, reset_mechanism="zero")`` fed X_t/tau,
    step by step on one input sequence ``[T]``: columns ``t, input, H_t (lorsp), mem (snntorch), S_t (lorsp),
    S_t (snntorch)``. The two recurrences are the same (docs/method.md); spikes can only differ where the
    membrane sits exactly on the threshold (snntorch fires on H > V_th, Eq. 2 on H >= V_th).

    Raises ``ImportError`` when snntorch is not installed (it is in the ``test`` extra).
    """
    import snntorch

    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    if inputs.dim() != 1:
        raise ValueError(f"inputs must be one sequence [T], got shape {tuple(inputs.shape)}")
    ours = lif_response(inputs, tau, v_threshold, 0.0)
    leaky = snntorch.Leaky(beta=1 - 1 / tau, threshold=v_threshold, reset_mechanism="zero")
    mem = leaky.init_leaky()
    spikes, membranes = [], []
    with torch.no_grad():
        for x_t in inputs:
            s, mem = leaky(x_t.view(1) / tau, mem)
            spikes.append(float(s.item()))
            membranes.append(float(mem.item()))
    return pd.DataFrame({"t": np.arange(1, len(inputs) + 1), "input": inputs.numpy(),
                         "H_t (lorsp)": ours.membrane.numpy(), "mem (snntorch)": membranes,
                         "S_t (lorsp)": ours.spikes.numpy(), "S_t (snntorch)": spikes})


# ----------------------------------------------------------------------------------------------------------
# Prompt factorisation (Eqs. 4–9)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ShownImages:
    """Images for the figures: ``images [N, 3, H, W]`` in [0, 1], readable ``names``, where they came from
    (``source``: ``"imagenet-samples"`` or ``"synthetic"``) and a sentence saying so (``note``)."""

    images: torch.Tensor
    names: list[str]
    source: str
    note: str

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def sample_images(n: int = 4, image_size=64, root=None, seed: int = 0) -> ShownImages:
    """``n`` ImageNet sample images of the data root (:func:`lorsp.data.load_sample_images`: a seeded pick,
    resized to ``image_size`` without crop, in [0, 1]) with readable names (``n01440764_tench`` → ``tench``).

    When the data root has no sample images, ``n`` images of lorsp's synthetic dataset, and a ``note`` that
    says so; an unreadable image file is an error naming it.
    """
    from .data import data_root, load_sample_images

    size = as_size(image_size)
    folder = data_root(root) / "imagenet-samples"
    loaded = load_sample_images(n=n, image_size=size, root=root, seed=seed, allow_synthetic=True)
    if loaded.synthetic:
        return ShownImages(loaded.images, [f"synthetic {i}" for i in range(len(loaded.names))], "synthetic",
                           f"{n} synthetic images (lorsp's synthetic dataset): the data root has no ImageNet "
                           f"sample images in {shown_path(folder, root)}")
    names = [stem.split("_", 1)[1].replace("_", " ") if "_" in stem else stem for stem in loaded.names]
    return ShownImages(loaded.images, names, "imagenet-samples",
                       f"{len(names)} ImageNet sample images from {shown_path(folder, root)}, resized to {size[0]}×{size[1]} px")


def find_trained_prompt_weights(roots: Sequence | None = None, groups: int | None = None,
                                rank: int | None = None, scale: str | None = None) -> Path | None:
    """A trained LoRSP prompt (the trainer's ``prompt.safetensors``: keys ending in ``factors.projection`` and
    ``factors.basis``, metadata ``method`` = ``lorsp`` when present), optionally of the given groups and rank;
    ``None`` when there is none. Prompts whose basis B never left its zero init are skipped.

    ``roots`` are searched in order and the newest match of the first root that has one is returned. By
    default: the committed records of the larger scales first (``results/paper``, ``results/mini``), then
    this machine's runs of the current scale (``runs/<scale>``, see :func:`lorsp.scale.current_scale`).
    """
    from safetensors import safe_open

    if roots is None:
        from .scale import current_scale

        roots = [_REPO / "results" / "paper", _REPO / "results" / "mini", _REPO / "runs" / current_scale(scale)]
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        found = []
        for path in root.rglob("*.safetensors"):
            try:
                with safe_open(str(path), "pt") as handle:
                    method = (handle.metadata() or {}).get("method", "lorsp")
                    keys = list(handle.keys())
                    proj = [k for k in keys if k.endswith("factors.projection")]
                    basis = [k for k in keys if k.endswith("factors.basis")]
                    if method != "lorsp" or not (proj and basis):
                        continue
                    p_shape = handle.get_slice(proj[0]).get_shape()
                    b_shape = handle.get_slice(basis[0]).get_shape()
                    # a basis still at its zero init (e.g. a threshold no neuron reached, so B got no
                    # gradient) gives δ = 0 and nothing to show: not a trained prompt for this chapter
                    basis_moved = bool(handle.get_tensor(basis[0]).abs().max() > 0)
            except Exception:  # not a readable safetensors file: not a prompt of ours
                continue
            r = b_shape[-2]
            if not basis_moved:
                continue
            if (rank is not None and r != rank) or (groups is not None and p_shape[1] != groups * r):
                continue
            found.append(path)
        if found:
            return max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    return None


def _load_trained_prompter(weights) -> tuple[LoRSPPrompter, str]:
    import json

    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata() or {}
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    proj = next((v for k, v in state.items() if k.endswith("factors.projection")), None)
    basis = next((v for k, v in state.items() if k.endswith("factors.basis")), None)
    if proj is None or basis is None:
        raise ValueError(f"{weights} holds no LoRSP factors (keys ending in factors.projection and "
                         f"factors.basis); it has {sorted(state)[:8]}")
    if basis.dim() != 3:
        raise ValueError(f"{weights}: expected a shared basis B [C, r, W], got shape {tuple(basis.shape)}")
    channels, rank, width = basis.shape
    groups = proj.shape[1] // rank
    try:
        options = json.loads(metadata.get("prompter_kwargs", "{}"))
        height = int(metadata.get("image_size", width))
    except ValueError as error:
        raise ValueError(f"{weights}: unreadable metadata {metadata!r}: {error}") from error
    lif = {k: options[k] for k in ("tau", "v_threshold", "v_reset", "surrogate_alpha") if k in options}
    prompter = build_prompter("lorsp", image_size=(height, width), channels=channels, groups=groups, rank=rank,
                              **lif)
    with torch.no_grad():
        prompter.factors.projection.copy_(proj)
        prompter.factors.basis.copy_(basis)
    where = ", ".join(f"{k}={metadata[k]}" for k in ("backbone", "dataset") if k in metadata)
    return prompter.eval(), f"trained prompt weights from {shown_path(weights)}" + (f" ({where})" if where else "")


def display_prompter(image_size=64, groups: int = 4, rank: int = 4, tau: float = 4.0, v_threshold: float = 0.0,
                     v_reset: float = 0.0, weights=None, basis_std: float = 0.05, projection_std: float = 0.05,
                     seed: int = 0) -> tuple[LoRSPPrompter, str]:
    """A LoRSP prompter with non-zero factors to look at, and a sentence saying what its weights are.

    With ``weights`` (a ``prompt.safetensors`` of a run, see :func:`find_trained_prompt_weights`) it loads
    the trained P and B, and the run's image size, groups, rank and LIF settings (the other arguments are
    then ignored). Otherwise it is **not trained**: LoRSP's own init has B = 0 (so every factor and δ are 0,
    nothing to see), so here P ~ N(0, ``projection_std``²) and B ~ N(0, ``basis_std``²) are drawn with
    ``seed`` — a random non-zero basis for display only.
    """
    if weights is not None:
        return _load_trained_prompter(weights)
    prompter = build_prompter("lorsp", image_size=image_size, groups=groups, rank=rank, tau=tau,
                              v_threshold=v_threshold, v_reset=v_reset)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prompter.factors.projection.copy_(torch.randn(prompter.factors.projection.shape, generator=generator)
                                          * projection_std)
        prompter.factors.basis.copy_(torch.randn(prompter.factors.basis.shape, generator=generator) * basis_std)
    note = (f"untrained: P ~ N(0, {projection_std:g}²) and B ~ N(0, {basis_std:g}²) drawn with seed {seed} for "
            f"display only (LoRSP's own init has B = 0, which makes every factor and δ zero)")
    return prompter.eval(), note


def with_lif_settings(prompter: LoRSPPrompter, tau: float, v_threshold: float, v_reset: float) -> LoRSPPrompter:
    """A copy of ``prompter`` with the same factors (P, B) and a LIF with these tau, V_th and V_reset."""
    clone = copy.deepcopy(prompter)
    clone.lif = LIF(tau=tau, v_threshold=v_threshold, v_reset=v_reset, surrogate_alpha=prompter.lif.surrogate_alpha,
                    detach_reset=prompter.lif.detach_reset)
    return clone


def _diverging(ax, image: np.ndarray, limit: float, title: str):
    handle = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return handle


def plot_prompt_anatomy(prompter: LoRSPPrompter, images: torch.Tensor, names: Sequence[str] | None = None,
                        max_images: int = 3, channel: int = 0) -> Figure:
    """One row per image: the image, F_1..F_G (Eq. 5), the spikes S_1..S_G (Eq. 7, share of the C channels
    that fired), δ (Eq. 9) and the prompted image x + δ clipped to [0, 1] for display (Eq. 10).

    Factors and δ show ``channel``; one colour scale per row (symmetric around 0).
    """
    images = images[:max_images]
    explanation = prompter.explain(images)
    groups = explanation.factors.shape[0]
    names = list(names or [f"image {i}" for i in range(len(images))])
    cols = 1 + 2 * groups + 2
    fig = Figure(figsize=(1.45 * cols, 1.7 * len(images) + 0.6), layout="constrained")
    axes = fig.subplots(len(images), cols, squeeze=False)
    for row in range(len(images)):
        ax = axes[row]
        ax[0].imshow(images[row].permute(1, 2, 0).numpy())
        ax[0].set_title(names[row][:18], fontsize=8)
        ax[0].set_axis_off()
        factors = explanation.factors[:, row, channel].numpy()
        limit = float(np.abs(factors).max()) or 1.0
        for g in range(groups):
            _diverging(ax[1 + g], factors[g], limit, f"F_{g + 1} (c={channel})")
            fired = explanation.spikes[g, row].mean(0).numpy()
            ax[1 + groups + g].imshow(fired, cmap="gray_r", vmin=0, vmax=1)
            ax[1 + groups + g].set_title(f"S_{g + 1}: {explanation.firing_rate[row, g].item():.0%} fired",
                                         fontsize=8)
            ax[1 + groups + g].set_axis_off()
        delta = explanation.prompt[row, channel].numpy()
        _diverging(ax[-2], delta, float(np.abs(delta).max()) or 1.0,
                   f"δ: {explanation.sparsity[row].item():.0%} zero")
        ax[-1].imshow((images[row] + explanation.prompt[row]).clamp(0, 1).permute(1, 2, 0).numpy())
        ax[-1].set_title("x + δ", fontsize=8)
        ax[-1].set_axis_off()
    lif = prompter.lif
    fig.suptitle(f"LoRSP anatomy: G={groups}, r={prompter.rank}, tau={lif.tau:g}, V_th={lif.v_threshold:g}, "
                 f"V_reset={lif.v_reset:g} (red > 0 > blue)", fontsize=10)
    return fig


def sparsity_grid(prompter: LoRSPPrompter, images: torch.Tensor, taus: Iterable[float],
                  thresholds: Iterable[float], v_reset: float | None = None) -> pd.DataFrame:
    """Mean sparsity of δ (share of zero entries) and mean firing rate over ``images`` for every
    (tau, v_threshold) pair, with the prompter's factors fixed. Columns ``tau, v_threshold, sparsity,
    firing_rate``."""
    v_reset = prompter.lif.v_reset if v_reset is None else v_reset
    rows = []
    for tau in taus:
        for v_threshold in thresholds:
            explanation = with_lif_settings(prompter, float(tau), float(v_threshold), v_reset).explain(images)
            rows.append(dict(tau=float(tau), v_threshold=float(v_threshold),
                             sparsity=explanation.sparsity.mean().item(),
                             firing_rate=explanation.firing_rate.mean().item()))
    return pd.DataFrame(rows)


def plot_sparsity_heatmap(grid: pd.DataFrame, title: str = "") -> Figure:
    """Heatmaps (seaborn) of the sparsity of δ and of the firing rate over the (tau, V_th) grid."""
    sns = _seaborn()
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, value, cmap in zip(fig.subplots(1, 2), ("sparsity", "firing_rate"), ("rocket_r", "mako")):
        table = grid.pivot(index="v_threshold", columns="tau", values=value).sort_index(ascending=False)
        sns.heatmap(table, annot=True, fmt=".2f", cmap=cmap, vmin=0, vmax=1, ax=ax,
                    xticklabels=[f"{v:g}" for v in table.columns], yticklabels=[f"{v:g}" for v in table.index])
        ax.set_title("sparsity of δ (share of zeros)" if value == "sparsity" else "firing rate (share of spikes)")
        ax.set_xlabel("tau")
        ax.set_ylabel("V_th")
    if title:
        fig.suptitle(title)
    return fig


def factor_correlation(factors: torch.Tensor) -> np.ndarray:
    """Pairwise Pearson correlation of the G prompt factors ``[G, N, C, H, W]`` (Fig. 3b).

    Per image, each factor is flattened over C·H·W and the G×G correlation matrix is computed; the matrices
    are averaged over the N images. A factor that is constant on an image has no correlation and gives NaN.
    """
    if factors.dim() != 5:
        raise ValueError(f"factors must be [G, N, C, H, W], got shape {tuple(factors.shape)}")
    g, n = factors.shape[:2]
    flat = factors.detach().double().permute(1, 0, 2, 3, 4).reshape(n, g, -1)
    centred = flat - flat.mean(-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    unit = centred / norm
    corr = unit @ unit.transpose(1, 2)
    return corr.mean(0).numpy()


def plot_factor_correlation(corr: np.ndarray, title: str = "pairwise correlation of the prompt factors") -> Figure:
    """The G×G correlation heatmap of Fig. 3b (seaborn), annotated, colour scale −1..1."""
    sns = _seaborn()
    g = corr.shape[0]
    labels = [f"F_{i + 1}" for i in range(g)]
    fig = Figure(figsize=(1.0 * g + 2.2, 0.9 * g + 1.4), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(pd.DataFrame(corr, index=labels, columns=labels), annot=True, fmt=".2f", cmap="RdBu_r",
                vmin=-1, vmax=1, square=True, ax=ax)
    ax.set_title(title, fontsize=10)
    return fig


def prompt_ranks(prompter: LoRSPPrompter, images: torch.Tensor, channel: int = 0) -> pd.DataFrame:
    """Numerical rank (``torch.linalg.matrix_rank``, float32, torch's default tolerance) of each factor F_g,
    of the dense average (1/G) Σ F_g (LPF) and of LoRSP's gated δ (Eq. 9), per image, for one channel's H×W
    matrix.

    Eq. 5 bounds every F_g and their average by r; the element-wise spike gate of Eq. 9 carries no such
    bound, so this table shows what the gating does to the rank on these images.
    """
    explanation = prompter.explain(images)
    rows = []
    for n in range(images.shape[0]):
        row = {"image": n}
        for g in range(explanation.factors.shape[0]):
            row[f"F_{g + 1}"] = int(torch.linalg.matrix_rank(explanation.factors[g, n, channel]))
        row["mean of F (LPF)"] = int(torch.linalg.matrix_rank(explanation.factors[:, n, channel].mean(0)))
        row["δ (LoRSP)"] = int(torch.linalg.matrix_rank(explanation.prompt[n, channel]))
        row["min(H, W)"] = min(explanation.prompt.shape[-2:])
        rows.append(row)
    return pd.DataFrame(rows).set_index("image")


def plot_prompt_explorer(prompter: LoRSPPrompter, images: torch.Tensor, tau: float = 4.0, v_threshold: float = 0.0,
                         v_reset: float = 0.0, image_index: int = 0, names: Sequence[str] | None = None,
                         channel: int = 0) -> Figure:
    """The slider callback of "Prompt factorisation": the anatomy of one image (the panels of
    :func:`plot_prompt_anatomy`, in two rows so that each is large enough to read) with the LIF's tau, V_th
    and V_reset replaced, the factors (P, B) unchanged. Top: the image, F_1..F_G (Eq. 5, ``channel``) and δ
    (Eq. 9); bottom: x + δ (clipped to [0, 1] for display) and the spikes S_1..S_G (Eq. 7, share of the
    channels that fired)."""
    if not 0 <= image_index < len(images):
        raise ValueError(f"image_index must be in [0, {len(images) - 1}], got {image_index}")
    names = list(names or [f"image {i}" for i in range(len(images))])
    clone = with_lif_settings(prompter, tau, v_threshold, v_reset)
    image = images[image_index:image_index + 1]
    explanation = clone.explain(image)
    groups = explanation.factors.shape[0]
    fig = Figure(figsize=(2.0 * (groups + 2), 4.6), layout="constrained")
    axes = fig.subplots(2, groups + 2)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(image[0].permute(1, 2, 0).numpy())
    axes[0, 0].set_title(names[image_index][:24], fontsize=9)
    factors = explanation.factors[:, 0, channel].numpy()
    limit = float(np.abs(factors).max()) or 1.0
    for g in range(groups):
        _diverging(axes[0, 1 + g], factors[g], limit, f"F_{g + 1} (channel {channel})")
        axes[1, 1 + g].imshow(explanation.spikes[g, 0].mean(0).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[1, 1 + g].set_title(f"S_{g + 1}: {explanation.firing_rate[0, g].item():.0%} fired", fontsize=9)
    delta = explanation.prompt[0, channel].numpy()
    _diverging(axes[0, -1], delta, float(np.abs(delta).max()) or 1.0, f"δ: {explanation.sparsity[0].item():.0%} zero")
    axes[1, 0].imshow((image[0] + explanation.prompt[0]).clamp(0, 1).permute(1, 2, 0).numpy())
    axes[1, 0].set_title("x + δ", fontsize=9)
    fig.suptitle(f"LoRSP anatomy: G={groups}, r={clone.rank}, tau={tau:.3g}, V_th={v_threshold:.3g}, V_reset={v_reset:.3g} "
                 f"(red > 0 > blue; black: fired)", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Parameter counting (Eqs. 13–15)
# ----------------------------------------------------------------------------------------------------------
def linear_head_param_count(num_features: int, num_classes: int) -> int:
    """A linear probe's weights and biases: num_features·num_classes + num_classes."""
    return num_features * num_classes + num_classes


def lorsp_count_grid(groups: Iterable[int], ranks: Iterable[int], image_size=224, channels: int = 3,
                     build: bool = True) -> pd.DataFrame:
    """LoRSP's prompt parameters over a (groups, rank) grid: the closed form of Eqs. 13–15
    (:func:`lorsp.prompt_param_count`) and, with ``build``, the count of a built module's parameters.
    Columns ``groups, rank, closed_form, module``."""
    rows = []
    for g in groups:
        for r in ranks:
            closed = prompt_param_count("lorsp", image_size=image_size, channels=channels, groups=g, rank=r)
            module = (build_prompter("lorsp", image_size=image_size, channels=channels, groups=g, rank=r)
                      .num_prompt_params() if build else None)
            rows.append(dict(groups=g, rank=r, closed_form=closed, module=module))
    return pd.DataFrame(rows)


def plot_count_grid(grid: pd.DataFrame, reference: dict[str, Any] | None = None) -> Figure:
    """Heatmap (seaborn) of LoRSP's prompt parameters over (groups, rank); ``reference`` adds a line of other
    methods' counts to the title, numbers or text as printed (e.g. ``{"ILM-VP (paper)": "147K"}``)."""
    sns = _seaborn()
    table = grid.pivot(index="groups", columns="rank", values="closed_form")
    fig = Figure(figsize=(6.5, 4.6), layout="constrained")
    ax = fig.subplots()
    annot = table.map(lambda v: f"{v / 1000:.2f}K")
    sns.heatmap(table, annot=annot, fmt="", cmap="crest", ax=ax, cbar_kws={"label": "prompt parameters"})
    ax.set_xlabel("rank r")
    ax.set_ylabel("groups G")
    title = "LoRSP prompt parameters W·r·(G + C)"
    if reference:
        title += "\n" + ", ".join(f"{k}: {v if isinstance(v, str) else f'{v:,}'}" for k, v in reference.items())
    ax.set_title(title, fontsize=10)
    return fig


def count_table(specs: Sequence[dict[str, Any]], image_size=224, channels: int = 3) -> pd.DataFrame:
    """Closed-form and module counts of several prompters, one row per spec.

    A spec is ``{"label": "LoRSP (G=4, r=4)", "method": "lorsp", "kwargs": {...}}``; a method that is not
    registered gives a row with ``available=False`` and no counts (never a made-up number). Prompters that
    live inside a backbone (VPT) name it with ``"backbone": "<timm name>"``: the module is counted after
    :meth:`attach` to that backbone (random init). Columns ``label, method, kwargs, available, closed_form,
    module, equal``.
    """
    from .prompters import list_prompters

    known = set(list_prompters())
    rows = []
    for spec in specs:
        method, kwargs = spec["method"], dict(spec.get("kwargs", {}))
        row = dict(label=spec.get("label", method), method=method,
                   kwargs=", ".join(f"{k}={v}" for k, v in kwargs.items()),
                   available=method in known, closed_form=None, module=None, equal=None)
        if row["available"]:
            row["closed_form"] = prompt_param_count(method, image_size=image_size, channels=channels, **kwargs)
            module = build_prompter(method, image_size=image_size, channels=channels, **kwargs)
            if spec.get("backbone"):
                import timm
                module.attach(timm.create_model(spec["backbone"], pretrained=False, img_size=image_size))
            row["module"] = module.num_prompt_params()
            row["equal"] = row["closed_form"] == row["module"]
        rows.append(row)
    return pd.DataFrame(rows)


def parse_reported_count(reported: str) -> tuple[float, int]:
    """``"6.27K"`` → (6270.0, 2): the value and the number of decimals printed before the K/M suffix."""
    text = str(reported).strip().upper().replace(",", "")
    multiplier = {"K": 1e3, "M": 1e6}.get(text[-1:], 1.0)
    number = text[:-1] if text[-1:] in ("K", "M") else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"cannot read a parameter count from {reported!r} (expected e.g. '6.27K', '147K')") from None
    decimals = len(number.split(".")[1]) if "." in number else 0
    return value * multiplier, decimals


def format_like_reported(count: int, reported: str) -> str:
    """``count`` written the way the paper writes ``reported`` (same suffix and decimals): 6272 → ``"6.27K"``."""
    _, decimals = parse_reported_count(reported)
    text = str(reported).strip().upper()
    suffix = text[-1] if text[-1:] in ("K", "M") else ""
    divisor = {"K": 1e3, "M": 1e6}.get(suffix, 1.0)
    return f"{count / divisor:.{decimals}f}{suffix}"


def reported_matches(count: int, reported: str) -> bool:
    """Does ``count`` round to the paper's printed ``reported`` count at the paper's precision?"""
    return format_like_reported(count, reported) == str(reported).strip().upper().replace(",", "")
