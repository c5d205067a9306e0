"""The prompt gallery chapter (Fig. 5): LoR-VP's and LoRSP's trained prompts on real test images
(:mod:`lorsp.experiments.gallery`); it has no side-by-side table, and its claims are measured on the
prompts (:func:`lorsp.experiments.gallery_claims`)."""
from __future__ import annotations

from .base import Chapter


class PromptGallery(Chapter):
    name = "prompt_gallery"
    paper_source = "Fig. 5"
