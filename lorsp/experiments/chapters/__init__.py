"""The experiment chapters of the book, one module each, registered by name on :class:`Chapter`.

Each module declares what its chapter is — the paper's table or figure it reproduces, the rows of its
side-by-side table (:meth:`Chapter.table`), the paper's claims it checks (:meth:`Chapter.claims`), its
figures — and :class:`Chapter` provides what every chapter does (banner, training, headline evidence,
training-loss curves, the training-length check, the smoke check). ``chapter("backbones")`` is the
backbones chapter; :data:`REGISTRY` maps every name to its class. No code outside these modules branches on
a chapter's name: it asks the chapter.
"""
from __future__ import annotations

from .base import REGISTRY, Chapter, ChapterPage, chapter, open_page
from . import backbones, downstream, hyperparameters, ood, prompt_gallery, sparsifiers  # noqa: F401  (register)

__all__ = ["REGISTRY", "Chapter", "ChapterPage", "chapter", "open_page"]
