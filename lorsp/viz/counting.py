"""Tables and figures of the "Parameter counting" chapter (Eqs. 13–15): :func:`lorsp_count_grid`,
:func:`plot_count_grid`, :func:`count_table`, :func:`linear_head_param_count`, and our count at the paper's
printed precision (:func:`parse_reported_count`, :func:`format_like_reported`, :func:`reported_matches`).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..prompters import build_prompter, prompt_param_count
from .display import import_seaborn


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
    sns = import_seaborn()
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
    from ..prompters import list_prompters

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
