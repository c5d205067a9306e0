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
    instance_variation: float      # :func:`instance_variation` of δ (0: shared by every image)
    varying_share: float = float("nan")  # :func:`varying_share` of δ (0: shared by every image)


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
        label = run.get("tags", {}).get("label", label_of(run))
        panels[label] = GalleryPanel(label, delta.cpu(), prompted.cpu(), sparsity, firing, per_factor,
                                     instance_variation(delta), varying_share(delta))
    return Gallery(images.cpu() if images is not None else None, labels or [], panels, source)


def instance_variation(prompts) -> float:
    """How much δ varies between images: the mean over entries (c, h, w) of the std of δ across the N images,
    divided by the mean |δ| over all images and entries. 0 for a prompt shared by every image (LoR-VP's); NaN
    with fewer than two images or when δ is zero everywhere. ``prompts``: ``[N, C, H, W]``."""
    if prompts.shape[0] < 2:
        return float("nan")
    scale = float(prompts.abs().mean())
    if scale == 0.0:
        return float("nan")
    return float(prompts.std(0).mean()) / scale


def varying_share(prompts) -> float:
    """Share of entries (c, h, w) at which δ is not the same in every image, in [0, 1]: 0 for a shared
    prompt; NaN with fewer than two images. ``prompts``: ``[N, C, H, W]``."""
    if prompts.shape[0] < 2:
        return float("nan")
    return float((prompts != prompts[:1]).any(0).float().mean())


def gallery_claims(gallery: Gallery, scale: str | None = None) -> list[str]:
    """What the gallery measures, against Fig. 5's description (LoRSP's prompts sparse and instance-specific,
    LoR-VP's dense and shared): the share of zero entries of δ, how much δ varies between images
    (:func:`instance_variation`) and the share of its entries that differ between images
    (:func:`varying_share`), as numbers — no verdict that could not fail."""
    out = []
    where = f" at {scale} scale" if scale else ""
    lorsp, lorvp = gallery.panels.get("LoRSP"), gallery.panels.get("LoR-VP")
    n = len(gallery.images) if gallery.images is not None else 0
    if lorsp is not None:
        firing = ("" if lorsp.firing_rate is None else
                  f"; its LIF neurons fire {100 * float(lorsp.firing_rate.mean()):.1f}% of the time on average")
        out.append(f"Sparsity (Fig. 5: LoRSP's prompts are sparse){where}: on average {100 * float(lorsp.sparsity.mean()):.1f}% "
                   f"of LoRSP's prompt entries are exactly zero (per image: "
                   f"{', '.join(f'{100 * float(s):.1f}%' for s in lorsp.sparsity)}){firing}.")
        out.append(f"Instance specificity (Fig. 5: LoRSP's prompts differ from image to image){where}: across the "
                   f"{n} images, {100 * lorsp.varying_share:.1f}% of LoRSP's prompt entries are not the same in "
                   f"every image, and the prompt varies by {lorsp.instance_variation:.3g} (mean over entries of the "
                   f"std across images, divided by the mean |δ|).")
    if lorvp is not None:
        out.append(f"LoR-VP{where}: {100 * float(lorvp.sparsity.mean()):.1f}% of its prompt entries are exactly "
                   f"zero; {100 * lorvp.varying_share:.1f}% of them differ between images (variation "
                   f"{lorvp.instance_variation:.3g}) — LoR-VP adds one prompt to every image by construction, so "
                   f"0 here checks the code, not the paper.")
    if lorsp is not None and lorvp is not None:
        gap = 100 * (float(lorsp.sparsity.mean()) - float(lorvp.sparsity.mean()))
        out.append(f"LoRSP's prompts have {gap:+.1f} percentage points of zero entries relative to LoR-VP's.")
    return out
