"""Fig. 5: what the trained prompts look like (:func:`prompt_gallery`, drawn by :func:`plot_gallery` and
:func:`plot_firing_rates`, measured by :func:`gallery_summary`) and what the gallery shows
(:func:`gallery_claims`).

The prompts are recomputed from the committed records alone — the record's config and ``prompt.safetensors``
rebuild the prompter (:func:`load_run_prompter`); the backbone is not needed, since δ(x) is computed before it.
What needs the data root is the run's own test images. Without them (a fresh clone, an empty data root) the
gallery is not recomputed and says so (:attr:`Gallery.not_recomputed`, :meth:`Gallery.note`); it still shows
what the records hold: each run's firing rate and share of zero entries of δ measured on its whole test set
(:func:`recorded_prompt_stats`), and a prompt that is the same for every image (LoR-VP's δ = B·A) drawn from
its weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .evaluation import test_set_of
from .grid import run_key, shown_path
from .methods import label_of
from .records import trained_state
from .store import RecordStore, training_engine

#: the prefix of the prompter's tensors in a run's checkpoint and ``prompt.safetensors``
PROMPTER_PREFIX = "prompter."


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
    """Fig. 5's gallery. ``images`` is None when the run's test images were not available (then ``panels`` is
    empty and ``not_recomputed`` says why and how to get them); ``recorded`` (the records' own measurements,
    :func:`recorded_prompt_stats`) and ``shared_prompts`` (label → the ``[C, H, W]`` δ of a prompter whose
    prompt does not depend on the image) come from the committed files and are there either way."""

    images: Any
    labels: list[str]
    panels: dict[str, GalleryPanel]
    source: str
    recorded: Any = None
    shared_prompts: dict[str, Any] = field(default_factory=dict)
    not_recomputed: str = ""

    @property
    def recomputed(self) -> bool:
        return self.images is not None

    def note(self) -> str:
        """One Markdown paragraph: which images the prompts are shown on, or what was not recomputed."""
        if self.recomputed:
            return f"The prompts below are computed on {self.source}."
        shared = (f", and the prompt of {' and '.join(self.shared_prompts)}, which is the same for every image, "
                  f"drawn from its committed weights" if self.shared_prompts else "")
        return (f"**Not recomputed: the prompts of Fig. 5 on real test images** — {self.not_recomputed} Shown "
                f"instead: what the committed records hold (each run's firing rate and share of zero entries of δ, "
                f"measured on its whole test set when it was trained){shared}.")


def readable_class_names(data) -> list[str] | None:
    """The dataset's classes in words (Tiny-ImageNet's WordNet ids become ``goldfish``…), or None."""
    from ..data import class_names
    try:
        return class_names(data)
    except TypeError:
        return None


def load_run_prompter(run: dict, results_dir):
    """The trained prompter of ``run`` (eval mode, CPU) and the run's TrainConfig, rebuilt without its backbone.

    The prompter is built by the engine's :func:`lorsp.train.build_prompter_for` from the run's config and
    filled (strictly) with the ``prompter.*`` tensors of the run folder's checkpoint when there is one, else of
    its committed ``record.json`` (the config) and ``prompt.safetensors``. Errors name the file and the keys.
    """
    import dataclasses
    engine = training_engine()
    values, state, source, _ = trained_state(Path(results_dir) / run_key(run), "prompter")
    config = dataclasses.replace(engine.TrainConfig.from_dict(values), device="cpu", resume=False, output=None)
    prompter = engine.build_prompter_for(config)
    if prompter is None:
        raise ValueError(f"{source}: run {run_key(run)} (method {config.method!r}) has no prompter to show")
    ours = {k[len(PROMPTER_PREFIX):]: v for k, v in state.items() if k.startswith(PROMPTER_PREFIX)}
    expected = set(prompter.state_dict())
    if set(ours) != expected:
        raise ValueError(f"{source}: its prompter tensors {sorted(ours)[:6]} do not fit the prompter rebuilt from "
                         f"the config (missing {sorted(expected - set(ours))[:5]}, unexpected "
                         f"{sorted(set(ours) - expected)[:5]})")
    for name, value in prompter.state_dict().items():
        if tuple(ours[name].shape) != tuple(value.shape):
            raise ValueError(f"{source}: {PROMPTER_PREFIX}{name} has shape {tuple(ours[name].shape)}, but the "
                             f"prompter rebuilt from the run's config expects {tuple(value.shape)}")
    prompter.load_state_dict(ours, strict=True)
    return prompter.eval(), config


def gallery_images(config, n_images: int):
    """The first image of each of the first ``n_images`` classes of the run's own test set (the subset it was
    scored on): ``(images [N, C, H, W], labels, source sentence)``. Raises
    :class:`lorsp.data.registry.DatasetNotFoundError` when the data root lacks the dataset."""
    import torch
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
    names = readable_class_names(data)
    labels = [str(names[int(data[i][1])]) if names else str(int(data[i][1])) for i in chosen]
    source = (f"{len(chosen)} test images of {config.dataset} ({config.image_size}×{config.image_size} px), "
              f"one per class")
    return images, labels, source


def _panel(label: str, prompter, x) -> GalleryPanel:
    import torch
    from ..prompters import prompt_sparsity
    with torch.no_grad():
        if hasattr(prompter, "explain"):
            explanation = prompter.explain(x)
            delta, rates = explanation.prompt, explanation.firing_rate
            firing, per_factor = rates.mean(1).cpu(), rates.cpu()
        else:
            delta = prompter.prompt(x) if hasattr(prompter, "prompt") else prompter(x) - x
            firing = per_factor = None
        prompted = prompter(x)
        sparsity = prompt_sparsity(delta).cpu()
    return GalleryPanel(label, delta.cpu(), prompted.cpu(), sparsity, firing, per_factor,
                        instance_variation(delta), varying_share(delta))


def prompt_gallery(runs: Sequence[dict], results_dir, n_images: int = 6, device: str = "cpu") -> Gallery:
    """The trained prompters of ``runs`` (Fig. 5: LoR-VP and LoRSP; the lowest seed of each label) applied to
    ``n_images`` real test images of the run's own test set (:func:`gallery_images`).

    For each method: δ(x), x̃, the sparsity of δ per image and, for LoRSP, the firing rate per image (and per
    factor, :meth:`lorsp.LoRSPPrompter.explain`), plus how much δ varies between images
    (``instance_variation``: 0 for a prompt shared by all images, as LoR-VP's). The prompters come from the
    committed files (:func:`load_run_prompter`); when the data root lacks the test images the gallery is not
    recomputed and says so, and never raises for it. ``device`` is accepted for compatibility: the prompters
    are small and run on the CPU.
    """
    from ..data.registry import DatasetNotFoundError
    first: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r.get("seed", 0)):
        first.setdefault(run.get("tags", {}).get("label", label_of(run)), run)
    prompters = {label: load_run_prompter(run, results_dir) for label, run in first.items()}
    shared = {label: p.shared_prompt().detach().cpu() for label, (p, _) in prompters.items()
              if hasattr(p, "shared_prompt")}
    gallery = Gallery(None, [], {}, "", recorded_prompt_stats(list(first.values()), results_dir),
                      shared_prompts=shared)
    if not prompters:
        return gallery
    config = next(iter(prompters.values()))[1]
    try:
        images, gallery.labels, gallery.source = gallery_images(config, n_images)
    except DatasetNotFoundError as error:
        gallery.not_recomputed = missing_images_sentence(config.dataset, error)
        gallery.source = f"not recomputed: no {config.dataset} test images"
        return gallery
    gallery.images = images
    gallery.panels = {label: _panel(label, prompter, images) for label, (prompter, _) in prompters.items()}
    return gallery


def missing_images_sentence(dataset: str, error: Exception | None = None, root=None) -> str:
    """Why ``dataset``'s test images are not there and how to get them (one or two sentences), e.g. "the data
    root (…/data) has no tiny-imagenet images. `lorsp data import PATH` … supplies them." ``error``: the
    :class:`~lorsp.data.registry.DatasetNotFoundError` raised, whose first clause says where it looked; ``root``:
    the data root it looked in (default :func:`lorsp.data.data_root`). No path of this machine is shown."""
    from ..data import data_root
    from ..data.registry import dataset_spec
    try:
        network = (" or a network (torchvision downloads it: `lorsp train --download`)"
                   if dataset_spec(dataset).downloadable else "")
    except (KeyError, ValueError):
        network = ""
    import re
    root = data_root(root)
    where = re.search(r"looked for: ([^)]*)\)", str(error or ""))
    looked = (" (looked for " + ", ".join(_in_root(p.strip(), root) for p in where.group(1).split(";")) + ")"
              if where else "")
    return (f"the data root ({shown_path(root)}) has no {dataset} images{looked}. `lorsp data import PATH` "
            f"(e.g. `lorsp data import ../shared/data`){network} supplies them.")


def _in_root(path: str, root: Path) -> str:
    """``path`` relative to the data root when it is inside it (``cifar10/train``), else as the book shows it."""
    return Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else shown_path(path)


def recorded_prompt_stats(runs: Sequence[dict], results_dir):
    """What the committed records of ``runs`` measured on their whole test set when they were trained: one row
    per run (method, dataset, seed, test accuracy, mean firing rate and share of zero entries of δ, in %; None
    where the record has none, e.g. the firing rate of a prompter without spikes). Runs without a record are
    left out."""
    import pandas as pd
    rows, store = [], RecordStore(results_dir)
    for run in runs:
        record = store.get(run)
        if record is None:
            continue
        percent = {k: None if record.get(k) is None else 100.0 * float(record[k])
                   for k in ("final_accuracy", "firing_rate", "sparsity")}
        rows.append({"method": run.get("tags", {}).get("label", label_of(run)), "dataset": run["dataset"],
                     "seed": run.get("seed"), "test accuracy (%)": percent["final_accuracy"],
                     "mean firing rate (%)": percent["firing_rate"], "zeros in δ (%)": percent["sparsity"]})
    return pd.DataFrame(rows, columns=["method", "dataset", "seed", "test accuracy (%)", "mean firing rate (%)",
                                       "zeros in δ (%)"])


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


def plot_gallery(gallery: Gallery):
    """Fig. 5: per image, the input and each method's δ (mean over the colour channels, diverging scale
    centred at 0) and x̃ (clipped to [0, 1]); LoRSP's firing rate and zeros under its prompt. When the gallery
    was not recomputed: the prompts that are the same for every image (``shared_prompts``), or None when there
    are none. Returns the figure (None when there is nothing to draw)."""
    import matplotlib.pyplot as plt
    if not gallery.recomputed:
        return _plot_shared_prompts(gallery.shared_prompts)
    methods = [m for m in ("LoR-VP", "LoRSP") if m in gallery.panels]
    columns = ["input"] + [f"{m} {part}" for m in methods for part in ("prompt", "prompted")]
    n = len(gallery.images)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.1 * len(columns), 2.1 * n), squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(gallery.images[row].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[row, 0].set_ylabel(gallery.labels[row], fontsize=8)
        for k, m in enumerate(methods):
            panel = gallery.panels[m]
            limit = float(abs(panel.prompts.mean(1)).max()) or 1.0
            axes[row, 1 + 2 * k].imshow(panel.prompts[row].mean(0).numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[row, 2 + 2 * k].imshow(panel.prompted[row].permute(1, 2, 0).clamp(0, 1).numpy())
            if panel.firing_rate is not None:
                axes[row, 1 + 2 * k].set_xlabel(f"fires {100 * float(panel.firing_rate[row]):.0f}%, "
                                                f"zeros {100 * float(panel.sparsity[row]):.0f}%", fontsize=8)
    for ax, title in zip(axes[0], columns):
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _plot_shared_prompts(shared: dict[str, Any]):
    import matplotlib.pyplot as plt
    if not shared:
        return None
    fig, axes = plt.subplots(1, len(shared), figsize=(3.2 * len(shared), 3.4), squeeze=False)
    for ax, (label, delta) in zip(axes[0], shared.items()):
        mean = delta.mean(0).numpy()
        limit = float(abs(mean).max()) or 1.0
        image = ax.imshow(mean, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"{label}: δ, the same for every image\n(from its committed weights)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_firing_rates(gallery: Gallery, method: str = "LoRSP"):
    """The firing rate (%) of ``method``'s LIF neurons per image and per prompt factor (step t) as a heatmap;
    None when the gallery was not recomputed or ``method`` has no spikes (then there is nothing to draw)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    panel = gallery.panels.get(method)
    if panel is None or panel.firing_rate_per_factor is None:
        return None
    rates = pd.DataFrame(100 * panel.firing_rate_per_factor.numpy(), index=gallery.labels,
                         columns=[f"factor {t + 1}" for t in range(panel.firing_rate_per_factor.shape[1])])
    fig, ax = plt.subplots(figsize=(1.2 * rates.shape[1] + 3, 0.45 * len(rates) + 1.5))
    sns.heatmap(rates, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100,
                cbar_kws={"label": "firing rate (%)"}, ax=ax)
    ax.set(title="share of LIF neurons that fired at each step t (= prompt factor), per image")
    fig.tight_layout()
    return fig


def gallery_summary(gallery: Gallery):
    """The prompts measured on the gallery's images, one row per method (mean and max |δ|, mean zeros and
    firing rate in %, variation across images); when the gallery was not recomputed, the committed records'
    own measurements on their whole test set (:attr:`Gallery.recorded`)."""
    import pandas as pd
    if not gallery.recomputed:
        return gallery.recorded if gallery.recorded is not None else pd.DataFrame()
    return pd.DataFrame({m: {"mean |δ| (pixel units, [0, 1] scale)": float(p.prompts.abs().mean()),
                             "max |δ|": float(p.prompts.abs().max()),
                             "mean zeros in δ (%)": 100 * float(p.sparsity.mean()),
                             "mean firing rate (%)": (None if p.firing_rate is None
                                                      else 100 * float(p.firing_rate.mean())),
                             "variation across images (std / mean |δ|)": p.instance_variation}
                         for m, p in gallery.panels.items()}).T


def gallery_claims(gallery: Gallery, scale: str | None = None) -> list[str]:
    """What the gallery measures, against Fig. 5's description (LoRSP's prompts sparse and instance-specific,
    LoR-VP's dense and shared): the share of zero entries of δ, how much δ varies between images
    (:func:`instance_variation`) and the share of its entries that differ between images
    (:func:`varying_share`), as numbers — no verdict that could not fail."""
    where = f" at {scale} scale" if scale else ""
    if not gallery.recomputed:
        return _recorded_claims(gallery, where)
    out = []
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


def _recorded_claims(gallery: Gallery, where: str) -> list[str]:
    """:func:`gallery_claims` without the images: what the committed records measured on the whole test set,
    and that instance specificity was not recomputed."""
    import pandas as pd
    out = []
    recorded = gallery.recorded if gallery.recorded is not None else pd.DataFrame()
    for _, row in recorded.iterrows():
        zeros, firing = row["zeros in δ (%)"], row["mean firing rate (%)"]
        measured = ["no share of zeros" if pd.isna(zeros) else f"{zeros:.1f}% of its prompt entries exactly zero"]
        if not pd.isna(firing):
            measured.append(f"its LIF neurons firing {firing:.1f}% of the time")
        out.append(f"{row['method']}{where}, from its committed record (seed {row['seed']}, measured on its whole "
                   f"{row['dataset']} test set when it was trained): {' and '.join(measured)}.")
    out.append(f"Instance specificity (Fig. 5: LoRSP's prompts differ from image to image) is not recomputed: "
               f"{gallery.not_recomputed}")
    return out
