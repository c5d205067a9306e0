"""Sliders that redraw a figure in place: :func:`slider_explorer` (``plot_fn`` + named sliders → a
:class:`SliderExplorer` widget; the rendered book shows its figure at the default values).
"""
from __future__ import annotations

import base64
from typing import Any

import ipywidgets as widgets


def _figure_png(fig) -> bytes:
    """``fig`` as PNG bytes, drawn as the notebook draws every other figure (IPython's ``print_figure``,
    tight bounding box)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def _close(fig) -> None:
    """Free a figure no longer shown: a pyplot figure is closed (else pyplot keeps it and it piles up);
    a plain :class:`Figure` (as the functions of :mod:`lorsp.viz` return) is only dropped."""
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
