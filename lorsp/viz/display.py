"""How the book's pages show things: a returned :class:`~matplotlib.figure.Figure` displays as a PNG in a
notebook (registered when this module is imported), paths print without this machine's folders
(:func:`shown_path`), and seaborn is imported only by the figures that draw with it.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
"""The checkout (the folder holding ``lorsp/``), which :func:`shown_path` prints paths relative to."""


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
    from ..data import data_root

    path = Path(path).resolve()
    for base, label in ((REPO_ROOT, ""), (data_root(root), "<data root>/")):
        try:
            return label + path.relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            continue
    return "…/" + "/".join(path.parts[-2:])


def import_seaborn():
    """seaborn, imported on first use."""
    import seaborn as sns  # imported lazily: only the figure functions need it

    return sns
