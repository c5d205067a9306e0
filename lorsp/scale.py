"""How big the book's experiments are: the ``LORSP_SCALE`` environment variable.

- ``smoke`` (default): CPU, minutes, the CI. The real local data and MobileNetV2 weights when the data root
  has them, else synthetic images and randomly initialised weights — and the chapter says so.
- ``desk``: a 2-core CPU, hours: the real EfficientNet-Lite0 and MobileNetV2 weights and the real CIFAR-10 /
  Tiny-ImageNet of the data root at 64 px, chosen by a recorded pilot and measured per-image costs
  (``lorsp.experiments.desk_setup``, ``lorsp.desk_budget``); it refuses to run without them (no fallbacks).
- ``mini``: the real offline backbone (MobileNetV2) and the real data at the full protocol (224 px,
  20 epochs); needs a GPU.
- ``paper``: the paper's backbones and datasets (Tables I–VI); needs GPUs.

Every chapter opens with :func:`scale_banner`, which states in words which data, weights, image counts and
epochs it uses, and which fallbacks (synthetic images, random weights) it took.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["SCALE_ENV", "SCALES", "Scale", "current_scale", "get_scale", "scale_banner", "banner_markdown"]

#: the environment variable that selects the scale
SCALE_ENV = "LORSP_SCALE"


@dataclass(frozen=True)
class Scale:
    """One scale of the book: what it is for and the sizes the method chapters use.

    Experiment chapters refine these per chapter (:func:`lorsp.experiments.scale_setup`); the fields here are
    the common defaults and the words a banner uses.
    """

    name: str
    description: str
    device: str
    image_size: int              # resolution the method chapters draw their figures at
    num_sample_images: int       # how many real images the method chapters show
    epochs: int                  # training epochs of the experiment chapters (the one place it is set:
                                 # lorsp.experiments.scale_setup reads it, the banner states it)
    allow_fallbacks: bool        # may a chapter fall back to synthetic images / random weights?

    def __str__(self) -> str:
        return self.name


SCALES: dict[str, Scale] = {
    "smoke": Scale("smoke", "CPU minutes: tiny subsets and low resolution, run by the CI", "cpu",
                   image_size=64, num_sample_images=4, epochs=3, allow_fallbacks=True),
    "desk": Scale("desk", "a 2-core CPU in hours: real ImageNet-pretrained backbones (EfficientNet-Lite0 and "
                          "MobileNetV2) and the real CIFAR-10 and Tiny-ImageNet of the data root at 64 px, 5 epochs "
                          "on CIFAR-10 and 3 on Tiny-ImageNet, 4–10 seeds; no fallbacks", "cpu",
                  image_size=64, num_sample_images=8, epochs=5, allow_fallbacks=False),
    "mini": Scale("mini", "the real offline backbone (MobileNetV2) and the real data at the full protocol "
                          "(224 px, 20 epochs), one GPU", "cuda",
                  image_size=224, num_sample_images=8, epochs=20, allow_fallbacks=False),
    "paper": Scale("paper", "the paper's backbones and datasets at the full protocol, GPUs", "cuda",
                   image_size=224, num_sample_images=8, epochs=20, allow_fallbacks=False),
}


def current_scale(value: str | None = None) -> str:
    """The scale's name: ``value`` if given, else ``$LORSP_SCALE``, else ``"smoke"``.

    Surrounding blanks and case are ignored; an unknown name raises ``ValueError`` naming ``LORSP_SCALE`` and
    the allowed values.
    """
    raw = os.environ.get(SCALE_ENV, "") if value is None else value
    if not isinstance(raw, str):
        raise ValueError(f"{SCALE_ENV} must be one of {', '.join(SCALES)}; got {raw!r}")
    name = raw.strip().lower() or "smoke"
    if name not in SCALES:
        raise ValueError(f"{SCALE_ENV}={raw!r} is not a scale; expected one of: {', '.join(SCALES)} "
                         f"(unset means smoke)")
    return name


def get_scale(name: str | None = None) -> Scale:
    """The :class:`Scale` called ``name`` (default: :func:`current_scale`)."""
    return SCALES[current_scale(name)]


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_as_text(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_as_text(v)}" for k, v in value.items())
    return str(value)


def _fallbacks(facts: Mapping[str, Any]) -> list[str]:
    value = facts.get("fallbacks") or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise ValueError(f"the banner's 'fallbacks' must be a list of sentences, got {value!r}")
    return [str(v) for v in value if str(v).strip()]


def banner_markdown(chapter_facts: Mapping[str, Any], scale: str | None = None) -> str:
    """The banner as Markdown text (see :func:`scale_banner`)."""
    if not isinstance(chapter_facts, Mapping):
        raise ValueError(f"scale_banner takes a dict of facts (data, weights, images, epochs, fallbacks), "
                         f"got {type(chapter_facts).__name__}")
    name = current_scale(scale if scale is not None else chapter_facts.get("scale"))
    info = SCALES[name]
    lines = [f"**Scale: `{name}`** — {info.description}. Set `{SCALE_ENV}` to one of "
             f"{', '.join(f'`{s}`' for s in SCALES)} to change it.", ""]
    rows = [(key, _as_text(value)) for key, value in chapter_facts.items() if key not in ("scale", "fallbacks")]
    if rows:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {str(text).replace('|', '/')} |" for key, text in rows]
        lines.append("")
    fallbacks = _fallbacks(chapter_facts)
    if fallbacks:
        lines.append("**Fallbacks taken in this run:**")
        lines += [f"- {text}" for text in fallbacks]
    else:
        lines.append("**Fallbacks:** none — every input named above is the real one.")
    return "\n".join(lines)


def _banner_html(chapter_facts: Mapping[str, Any], scale: str | None = None) -> str:
    name = current_scale(scale if scale is not None else chapter_facts.get("scale"))
    info = SCALES[name]
    esc = html.escape
    rows = "".join(f"<tr><th style='text-align:left'>{esc(str(k))}</th><td style='text-align:left'>"
                   f"{esc(_as_text(v))}</td></tr>"
                   for k, v in chapter_facts.items() if k not in ("scale", "fallbacks"))
    fallbacks = _fallbacks(chapter_facts)
    if fallbacks:
        fb = ("<p><b>Fallbacks taken in this run:</b></p><ul>"
              + "".join(f"<li>{esc(t)}</li>" for t in fallbacks) + "</ul>")
    else:
        fb = "<p><b>Fallbacks:</b> none — every input named above is the real one.</p>"
    return (f"<div class='lorsp-scale-banner' style='border-left:4px solid #4c72b0;padding:0.4em 0.8em'>"
            f"<p><b>Scale: <code>{esc(name)}</code></b> — {esc(info.description)}. Set "
            f"<code>{SCALE_ENV}</code> to one of {', '.join(f'<code>{s}</code>' for s in SCALES)} "
            f"to change it.</p><table>{rows}</table>{fb}</div>")


class _Banner:
    """Displays as HTML in Jupyter and the book, as Markdown elsewhere (``str(banner)``)."""

    def __init__(self, markdown: str, html_text: str):
        self.markdown, self.html = markdown, html_text

    def _repr_markdown_(self) -> str:
        return self.markdown

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.markdown

    __repr__ = __str__


def scale_banner(chapter_facts: Mapping[str, Any], scale: str | None = None) -> _Banner:
    """The banner a chapter opens with: the scale, then the chapter's facts, then its fallbacks in words.

    ``chapter_facts`` is a dict the chapter builds from what it actually loaded, e.g.
    ``{"data": "4 ImageNet sample images", "weights": "none (no backbone in this chapter)",
    "images": 4, "epochs": "none", "fallbacks": ["synthetic images: the data root has no ImageNet samples"]}``.
    Every key but ``scale`` and ``fallbacks`` becomes a row; ``fallbacks`` (a list of sentences, possibly empty)
    is listed under its own heading, and "none" is said when it is empty. ``scale`` (or the ``scale``
    argument) overrides ``LORSP_SCALE``. The result displays as HTML in a notebook (and the rendered book),
    and ``str()`` gives Markdown.
    """
    markdown = banner_markdown(chapter_facts, scale)
    return _Banner(markdown, _banner_html(chapter_facts, scale))
