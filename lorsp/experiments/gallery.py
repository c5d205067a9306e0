"""Fig. 5: what the trained prompts look like (:func:`prompt_gallery`) and what the gallery shows
(:func:`gallery_claims`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .evaluation import load_run_model, test_set_of
from .methods import label_of


@dataclass
class GalleryPanel:
    """One method's prompts on the gallery images (all ``[N, C, H, W]`` CPU tensors, detached)."""

    label: str
    prompts: Any                   # δ(x)
    prompted: Any                  # x̃ = x + δ(x) (what the backbone sees before normalisation)
    sparsity: Any                  # [N] share of zero entries of δ
    firing_rate: Any | None        # [N] mean firing rate (LoRSP), None for a prompter without spikes
    firing_rate_per_factor: Any | None  # [N, G]
    instance_variation: float      # mean over pixels of std over images of δ, over mean |δ| (0: shared)


@dataclass
class Gallery:
    images: Any
    labels: list[str]
    panels: dict[str, GalleryPanel]
    source: str


def prompt_gallery(runs: Sequence[dict], results_dir, n_images: int = 6, device: str = "cpu") -> Gallery:
    """The trained prompters of ``runs`` (Fig. 5: LoR-VP and LoRSP) applied to ``n_images`` real test images.

    Images are the first image of each of the first ``n_images`` classes of the run's own test set (the
    same subset the run was scored on). For each method: δ(x), x̃, the sparsity of δ per image and, for
    LoRSP, the firing rate per image (and per factor, :meth:`lorsp.LoRSPPrompter.explain`), plus how much δ
    varies between images (``instance_variation``: 0 for a prompt shared by all images, as LoR-VP's).
    """
    import torch
    from ..prompters import prompt_sparsity
    panels: dict[str, GalleryPanel] = {}
    images = labels = None
    source = ""
    for run in runs:
        model, config = load_run_model(run, results_dir, device=device)
        if images is None:
            data = test_set_of(config)
            chosen, seen = [], set()
            for index in range(len(data)):
                _, label = data[index]
                if int(label) not in seen:
                    seen.add(int(label))
                    chosen.append(index)
                if len(chosen) == n_images:
                    break
            images = torch.stack([data[i][0] for i in chosen])
            names = getattr(data, "classes", None)
            labels = [str(names[int(data[i][1])]) if names else str(int(data[i][1])) for i in chosen]
            source = (f"{len(chosen)} test images of {config.dataset} ({config.image_size}×{config.image_size} px), "
                      f"one per class")
        prompter = model.prompter
        x = images.to(device)
        with torch.no_grad():
            if hasattr(prompter, "explain"):
                explanation = prompter.explain(x)
                delta = explanation.prompt
                rates = explanation.firing_rate
                firing, per_factor = rates.mean(1).cpu(), rates.cpu()
            else:
                delta = prompter.prompt(x) if hasattr(prompter, "prompt") else prompter(x) - x
                firing = per_factor = None
            prompted = prompter(x)
            sparsity = prompt_sparsity(delta).cpu()
            scale = delta.abs().mean().clamp_min(1e-12)
            variation = float(delta.std(0).mean() / scale) if len(x) > 1 else float("nan")
        label = run.get("tags", {}).get("label", label_of(run))
        panels[label] = GalleryPanel(label, delta.cpu(), prompted.cpu(), sparsity, firing, per_factor, variation)
    return Gallery(images.cpu() if images is not None else None, labels or [], panels, source)


def gallery_claims(gallery: Gallery, scale: str | None = None) -> list[str]:
    """Fig. 5's claims, checked on the gallery: LoRSP's prompts are sparse and instance-specific, LoR-VP's
    are dense and shared. Each sentence states the measured numbers."""
    out = []
    where = f" at {scale} scale" if scale else ""
    lorsp, lorvp = gallery.panels.get("LoRSP"), gallery.panels.get("LoR-VP")
    if lorsp is not None:
        mean_sparsity = float(lorsp.sparsity.mean())
        verdict = "holds" if mean_sparsity > 0 else "does not hold"
        out.append(f"“LoRSP produces sparse prompts” {verdict}{where}: on average {100 * mean_sparsity:.1f}% of "
                   f"the prompt's entries are exactly zero (per image: "
                   f"{', '.join(f'{100 * float(s):.0f}%' for s in lorsp.sparsity)}); mean firing rate "
                   f"{100 * float(lorsp.firing_rate.mean()):.1f}%.")
        verdict = "holds" if lorsp.instance_variation > 1e-3 else "does not hold"
        out.append(f"“LoRSP's prompts are instance-specific” {verdict}{where}: across the images its prompt "
                   f"varies by {lorsp.instance_variation:.3f} (std over images / mean |δ|).")
    if lorvp is not None:
        dense = float(lorvp.sparsity.mean())
        verdict = "holds" if dense < 0.01 and lorvp.instance_variation < 1e-6 else "does not hold"
        out.append(f"“LoR-VP's prompt is dense and shared by every image” {verdict}{where}: "
                   f"{100 * dense:.1f}% zeros, variation across images {lorvp.instance_variation:.2g}.")
    return out
