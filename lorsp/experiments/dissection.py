"""The trained LoRSP prompt that the method chapter ``prompt_factorisation`` dissects (Eqs. 4–9).

The chapter looks inside one trained prompt: its factors F_t (Eqs. 4–5), the LIF spikes S_t that gate them
(Eqs. 6–8), δ (Eq. 9), the firing rates, the correlation between factors (Fig. 3b) and the sparsity of δ.
A prompt barely moved from its zero start (a smoke run) makes all of these meaningless, so the chapter
dissects the **committed record of the largest scale that has one** (:data:`DISSECTION_SCALES`: ``paper``,
``mini``, then ``desk``): the LoRSP run of the headline chapter (``backbones``, Tables II/V) at G = r = 4,
lowest seed first (:func:`dissection_candidates`). :func:`find_dissection_record` says which record it is, or
why there is none (the chapter then falls back to a prompt it finds or draws, and says so);
:func:`load_dissected_prompt` rebuilds the prompter from the record's config with the prompter registry and
loads its trained weights from ``prompt.safetensors``; :func:`dissection_images` loads test images of the
record's own test set at the record's resolution; :func:`prompt_measurements` and :func:`measured_sentences`
turn what the chapter computes into its sentences.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grid import grid, run_key, shown_path
from .grid import results_root as resolve_results_root
from .store import RecordStore, read_run_record, training_engine

#: the committed scales a dissected prompt may come from, the largest first
DISSECTION_SCALES = ("paper", "mini", "desk")
#: the chapter whose LoRSP runs are dissected (the headline: Tables II and V)
DISSECTION_CHAPTER = "backbones"
#: the file of a results folder that holds the trained prompter and head (:data:`lorsp.experiments.PUBLISHED_FILES`)
PROMPT_FILE = "prompt.safetensors"
#: the prefix of the prompter's tensors in that file (:func:`lorsp.train.save_prompt_weights`)
PROMPTER_PREFIX = "prompter."


def dissection_candidates(scale: str, chapter: str = DISSECTION_CHAPTER) -> list[dict[str, Any]]:
    """The LoRSP runs of ``chapter`` at ``scale`` that the chapter may dissect, in order of preference: the
    grid's order (first dataset, first backbone) with the lowest seed first."""
    runs = [r for r in grid(chapter, scale)
            if r.get("tags", {}).get("label") == "LoRSP" and not r["tags"].get("deviation")]   # the paper's protocol
    return sorted(runs, key=lambda r: r["seed"])   # stable: keeps the grid's order within a seed


@dataclass
class DissectionSearch:
    """Where :func:`find_dissection_record` looked: the record folder found (``record_dir``, at ``scale``) or
    ``None``, and one sentence per scale saying what was found there (``looked``)."""

    record_dir: Path | None
    scale: str | None
    looked: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.record_dir is not None

    @property
    def reason(self) -> str:
        """Why no record is dissected (empty when one is)."""
        if self.found:
            return ""
        return "no committed LoRSP record to dissect: " + "; ".join(self.looked)


def find_dissection_record(results_root=None, scales=DISSECTION_SCALES,
                           chapter: str = DISSECTION_CHAPTER) -> DissectionSearch:
    """The committed LoRSP record the chapter dissects: under ``<results_root>/<scale>/<run key>/`` (default
    ``$LORSP_RESULTS``, else the repository's ``results/``), the first of :func:`dissection_candidates` whose ``record.json`` is final and
    completed, at the first (largest) scale of ``scales`` that has one. A diverged run (``status: "failed"``)
    is passed over and named in :attr:`DissectionSearch.looked`."""
    root = resolve_results_root(results_root)
    looked = []
    for scale in scales:
        candidates = dissection_candidates(scale, chapter)
        failed = []
        for run in candidates:
            store = RecordStore(root / scale)
            if not store.is_final(run):
                continue
            folder, record = store.run_folder(run), store.read(run)
            if record.get("status", "completed") != "completed":
                failed.append(f"{run_key(run)} ({record.get('status')}: {str(record.get('reason'))[:80]})")
                continue
            return DissectionSearch(folder, scale, looked)
        where = shown_path(root / scale)
        text = (f"`{scale}`: none of its {len(candidates)} LoRSP runs of the {chapter} chapter has a record in {where}"
                if not failed else f"`{scale}`: only diverged LoRSP records in {where}: {', '.join(failed)}")
        looked.append(text)
    return DissectionSearch(None, None, looked)


@dataclass
class DissectedPrompt:
    """A trained LoRSP prompter rebuilt from a committed record, and what the banner says about it."""

    prompter: Any                 # lorsp.LoRSPPrompter, eval mode, on the CPU
    scale: str
    key: str
    record_dir: Path
    record: dict[str, Any]        # the record.json
    config: Any                   # its lorsp.train.TrainConfig

    @property
    def accuracy_pct(self) -> float | None:
        value = self.record.get("final_accuracy")
        return None if value is None else 100.0 * float(value)

    @property
    def commit(self) -> str:
        return str(self.record.get("git_commit") or "unknown")

    def facts(self) -> dict[str, Any]:
        """The banner's rows (:func:`lorsp.scale.scale_banner`): which record, its data, weights, image counts,
        resolution, epochs, seed, test accuracy and the commit that trained it."""
        c, r = self.config, self.record
        data = r.get("data") or {}
        counts = (f"{_count(c.train_per_class)} train / {_count(c.test_per_class)} test images per class"
                  + (f" ({data['n_train']:,} / {data['n_test']:,} images)" if "n_train" in data and "n_test" in data else ""))
        options = ", ".join(f"{k}={v}" for k, v in c.prompter_kwargs.items())
        seconds = (r.get("experiment") or {}).get("wall_seconds") or (r.get("timings") or {}).get("total_seconds")
        accuracy = "—" if self.accuracy_pct is None else f"{self.accuracy_pct:.2f}%"
        return {
            "scale": self.scale,
            "record": f"{shown_path(self.record_dir)}/ (record.json and {PROMPT_FILE}): the `{self.scale}` LoRSP run "
                      f"`{self.key}`",
            "prompter": f"LoRSP ({options}), {c.image_size}×{c.image_size} px, "
                        f"{_param_count(self.prompter):,} trained prompt parameters",
            "data": f"{c.dataset}: {counts}",
            "backbone": f"{c.backbone} ({_weights_text(r, c)})",
            "resolution": f"{c.image_size}×{c.image_size} px",
            "epochs": f"{r.get('epochs_completed', c.epochs)} of {c.epochs}"
                      + (f" ({r['steps_completed']:,} optimisation steps, batch {c.batch_size}, lr {c.lr})"
                         if r.get("steps_completed") is not None else f" (batch {c.batch_size}, lr {c.lr})"),
            "seed": c.seed,
            "test accuracy": f"{accuracy} on the run's {data.get('n_test', '?')} test images (final epoch)",
            "trained by": _provenance(r, self.commit, seconds),
        }


    def recorded_sentence(self) -> str:
        """What the run's own record measured on its whole test set (the engine's evaluation), to set beside
        this page's images: mean firing rate and share of zero entries of δ; empty when the record has neither."""
        firing, sparsity = self.record.get("firing_rate"), self.record.get("sparsity")
        if firing is None and sparsity is None:
            return ""
        parts = ([f"{100 * float(firing):.1f}% of the neurons firing"] if firing is not None else []) + \
                ([f"{100 * float(sparsity):.1f}% of δ's entries exactly zero"] if sparsity is not None else [])
        n_test = (self.record.get("data") or {}).get("n_test")
        where = f"its {n_test:,} test images" if n_test else "its test set"
        return f"Over {where}, the run's record measured {' and '.join(parts)} (after the last epoch)."


def _provenance(record: dict, commit: str, seconds) -> str:
    """``commit 0123456789ab, 6.5 min on cpu (x86_64, 2 logical cores), torch 2.x``: what trained the run."""
    text = f"commit {commit[:12]}" + (" with uncommitted changes (-dirty)" if commit.endswith("-dirty") else "")
    if seconds:
        text += f", {seconds / 60:.1f} min" + (f" on {record['device_name']}" if record.get("device_name") else "")
    torch_version = (record.get("versions") or {}).get("torch")
    return text + (f", torch {torch_version}" if torch_version else "")


def _weights_text(record: dict, config) -> str:
    """The backbone's weights as the banner says them: a file by its name only (not this machine's path)."""
    if config.random_init or record.get("random_weights"):
        return "RANDOM INIT"
    source = str(record.get("weights_source") or "weights not recorded")
    return f"weights {Path(source[5:]).name}" if source.startswith("file:") else f"weights {source}"


def _count(value) -> str:
    return "all" if value is None else f"{value:,}"


def _param_count(prompter) -> int:
    return sum(p.numel() for p in prompter.parameters() if p.requires_grad)


def load_dissected_prompt(record_dir, scale: str | None = None, methods=("lorsp",)) -> DissectedPrompt:
    """Rebuild the trained prompter of a results folder (``record.json`` + ``prompt.safetensors``).

    The prompter is built with :func:`lorsp.prompters.build_prompter` from the record's config (``method``,
    ``image_size``, ``prompter_kwargs``; LoRSP on its reference path, ``fused=False``), on the CPU in eval mode,
    and filled with the file's ``prompter.*`` tensors (strict: every parameter and buffer of the rebuilt
    prompter must be there, with its shape). Errors name the file and the key: a missing or unreadable file, a
    record without ``config`` or whose ``config.method`` is not one of ``methods`` (the chapter dissects
    ``lorsp``; :mod:`.collapse` measures any prompter's δ), a config the registry does not rebuild, a tensor
    missing or of the wrong shape. ``scale``: the banner's scale (default: the name of the folder above
    ``record_dir``).
    """
    import torch
    from ..prompters import build_prompter
    record_dir = Path(record_dir)
    record_path, weights_path = record_dir / "record.json", record_dir / PROMPT_FILE
    for path in (record_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a committed record to dissect needs record.json and "
                                    f"{PROMPT_FILE} (the trained prompt) in {record_dir}")
    try:
        record = read_run_record(record_path)
    except json.JSONDecodeError as error:
        raise ValueError(f"{record_path} is not valid JSON: {error}") from error
    if not isinstance(record.get("config"), dict):
        raise ValueError(f"{record_path} has no 'config' (the run's TrainConfig): cannot rebuild its prompter")
    try:
        config = training_engine().TrainConfig.from_dict(record["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{record_path}: 'config' is not a TrainConfig: {error}") from error
    if config.method not in methods:
        raise ValueError(f"{record_path}: config.method is {config.method!r}; expected "
                         f"{' or '.join(map(repr, methods))}")
    kwargs = dict(config.prompter_kwargs)
    if config.method == "lorsp":
        kwargs["fused"] = False   # the reference path: explain() and the sliders use it
    try:
        prompter = build_prompter(config.method, image_size=config.image_size, **kwargs)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{record_path}: config.prompter_kwargs {config.prompter_kwargs!r} (image_size "
                         f"{config.image_size}) do not rebuild a {config.method!r} prompter: {error}") from error
    state = _prompter_state(weights_path)
    expected = prompter.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{weights_path}: no tensor {PROMPTER_PREFIX}{missing[0]} (the rebuilt prompter needs "
                         f"{', '.join(PROMPTER_PREFIX + k for k in missing)}; the file has "
                         f"{', '.join(PROMPTER_PREFIX + k for k in sorted(state)) or 'no prompter tensors'})")
    for name, value in expected.items():
        if tuple(state[name].shape) != tuple(value.shape):
            raise ValueError(f"{weights_path}: {PROMPTER_PREFIX}{name} has shape {tuple(state[name].shape)}, but the "
                             f"prompter rebuilt from {record_path.name}'s config expects {tuple(value.shape)}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"{weights_path}: {PROMPTER_PREFIX}{unexpected[0]} does not fit the prompter rebuilt from "
                         f"{record_path.name}'s config (extra keys: {unexpected})")
    with torch.no_grad():
        prompter.load_state_dict(state, strict=True)
    key = (record.get("experiment") or {}).get("key") or record_dir.name
    return DissectedPrompt(prompter.eval(), scale or record_dir.parent.name, key, record_dir, record, config)


def _prompter_state(weights_path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{weights_path} is not a readable safetensors file: {error}") from error
    return {k[len(PROMPTER_PREFIX):]: v for k, v in tensors.items() if k.startswith(PROMPTER_PREFIX)}


def dissection_images(dissected: DissectedPrompt, n: int = 8, root=None):
    """``n`` test images of the record's own test set (same subset and seed as it was scored on; the first
    image of each of the first ``n`` classes) at the record's resolution, as :class:`lorsp.viz.ShownImages`
    named by class. When the data root lacks that dataset: ``n`` ImageNet sample images at the same
    resolution (:func:`lorsp.viz.sample_images`), with a note saying why."""
    import dataclasses
    import torch
    from ..data.registry import DatasetNotFoundError
    from ..viz import ShownImages, sample_images
    from .evaluation import test_set_of
    from .gallery import readable_class_names

    config = dataclasses.replace(dissected.config, data_root=str(root) if root is not None else None)
    try:
        data = test_set_of(config)
    except (DatasetNotFoundError, FileNotFoundError) as error:
        shown = sample_images(n, config.image_size, root=root, seed=0)
        from .gallery import missing_images_sentence
        shown.note = (f"{shown.note} — not the record's own {config.dataset} test images: "
                      f"{missing_images_sentence(config.dataset, error, root)}")
        return shown
    chosen, seen = [], set()
    for index in range(len(data)):
        image, label = data[index]
        if int(label) not in seen:
            seen.add(int(label))
            chosen.append((image, int(label)))
        if len(chosen) == n:
            break
    names = readable_class_names(data)
    labels = [str(names[label]) if names else f"class {label}" for _, label in chosen]
    note = (f"{len(chosen)} test images of {config.dataset} from the record's own test set (the first image of each "
            f"of the first {len(chosen)} classes), {config.image_size}×{config.image_size} px")
    return ShownImages(torch.stack([image for image, _ in chosen]), labels, config.dataset, note)


def prompt_measurements(prompter, images) -> dict[str, Any]:
    """What the chapter measures on ``images`` with the prompter's own LIF settings: the std of the factors
    F_t (Eqs. 4–5), the share of neurons firing (Eqs. 6–8; overall and per step t), the share of exact zeros of
    δ (Eq. 9; mean, min, max over images) and the pairwise correlation of the factors (Fig. 3b; mean, mean
    absolute value, min, max over pairs t ≠ t'; NaN entries, from a factor constant on an image, are left out
    and counted)."""
    import numpy as np
    import torch
    from ..viz import factor_correlation

    with torch.no_grad():
        explanation = prompter.explain(images)
    corr = factor_correlation(explanation.factors)
    groups = corr.shape[0]
    off = corr[~np.eye(groups, dtype=bool)] if groups > 1 else np.array([])
    finite = off[np.isfinite(off)]
    rates = explanation.firing_rate.double()            # [N, G]
    sparsity = explanation.sparsity.double()            # [N]
    return {
        "images": int(images.shape[0]),
        "groups": groups,
        "tau": float(prompter.lif.tau),
        "v_threshold": float(prompter.lif.v_threshold),
        "factor_std": float(explanation.factors.double().std()),
        "delta_abs_mean": float(explanation.prompt.double().abs().mean()),
        "firing_rate": float(rates.mean()),
        "firing_rate_per_step": [float(v) for v in rates.mean(0)],
        "sparsity": float(sparsity.mean()),
        "sparsity_min": float(sparsity.min()),
        "sparsity_max": float(sparsity.max()),
        "correlation_mean": float(finite.mean()) if finite.size else math.nan,
        "correlation_abs_mean": float(abs(finite).mean()) if finite.size else math.nan,
        "correlation_min": float(finite.min()) if finite.size else math.nan,
        "correlation_max": float(finite.max()) if finite.size else math.nan,
        "correlation_undefined": int(off.size - finite.size) // 2,
    }


def measured_sentences(m: dict[str, Any], what: str) -> list[str]:
    """The chapter's sentences about the dissected prompt, every number from :func:`prompt_measurements`
    ``m``; ``what`` names the prompt (e.g. "the desk-trained prompt")."""
    steps = ", ".join(f"t={t + 1}: {100 * v:.1f}%" for t, v in enumerate(m["firing_rate_per_step"]))
    out = [f"On these {m['images']} images, the factors of {what} have a standard deviation of "
           f"{m['factor_std']:.3g} and δ a mean |δ| of {m['delta_abs_mean']:.3g}."]
    if m["factor_std"] == 0.0:
        out.append("Every factor is exactly zero: the basis B never left its zero initialisation, so there are no "
                   "spikes, correlations or sparsity to read.")
        return out
    out.append(f"At the prompter's own threshold (τ = {m['tau']:g}, V_th = {m['v_threshold']:g}), "
               f"{100 * m['firing_rate']:.1f}% of the neurons fire ({steps}), and "
               f"{100 * m['sparsity']:.1f}% of δ's entries are exactly zero (per image "
               f"{100 * m['sparsity_min']:.1f}–{100 * m['sparsity_max']:.1f}%).")
    if m["groups"] > 1 and not math.isnan(m["correlation_mean"]):
        out.append(f"The pairwise correlations of the {m['groups']} factors range from {m['correlation_min']:.2f} to "
                   f"{m['correlation_max']:.2f} (mean {m['correlation_mean']:.2f}, mean absolute value "
                   f"{m['correlation_abs_mean']:.2f}); the paper's Fig. 3b finds its "
                   f"learned factors \"weakly correlated and complementary\"."
                   + (f" {m['correlation_undefined']} pair(s) have no correlation on some image (a constant factor)."
                      if m["correlation_undefined"] else ""))
    return out


@dataclass
class DissectionSubject:
    """What the chapter dissects: the ``prompter``, the ``samples`` it is shown on (:class:`lorsp.viz.ShownImages`),
    the banner's ``facts`` (with ``fallbacks``) at ``scale``, ``what`` (words naming the prompt), ``trained``
    (False for the random display basis) and the committed record (``dissected``, None on a fallback)."""

    prompter: Any
    samples: Any
    facts: dict[str, Any]
    scale: str
    what: str
    trained: bool
    dissected: DissectedPrompt | None = None

    def banner(self):
        from ..scale import scale_banner
        return scale_banner(self.facts, scale=self.scale)


def dissection_subject(results_root=None, scale: str | None = None, n_images: int = 8, data_root=None,
                       fallback_roots=None) -> DissectionSubject:
    """The prompt the chapter dissects and what its banner says.

    The committed record of :func:`find_dissection_record` (under ``results_root``) when there is one, shown on
    ``n_images`` of its own test images (:func:`dissection_images`). Otherwise the chapter's fallback, and the
    banner's fallbacks say why: a trained LoRSP prompt (G = r = 4) found by
    :func:`lorsp.viz.find_trained_prompt_weights` in ``fallback_roots`` (default: ``results/paper``,
    ``results/mini``, then this machine's ``runs/<scale>``, e.g. a smoke run of another chapter), else a random
    non-zero basis drawn for display (:func:`lorsp.viz.display_prompter`), on the scale's ImageNet sample
    images. ``scale``: the page's scale (default ``LORSP_SCALE``)."""
    from .. import viz
    from ..scale import get_scale

    page = get_scale(scale)
    search = find_dissection_record(results_root)
    fallbacks = []
    if search.found:
        dissected = load_dissected_prompt(search.record_dir, scale=search.scale)
        samples = dissection_images(dissected, n=n_images, root=data_root)
        facts = dissected.facts()
        prompter, banner_scale, trained = dissected.prompter, dissected.scale, True
        what = f"the {dissected.scale}-trained prompt of run {dissected.key}"
    else:
        weights = viz.find_trained_prompt_weights(fallback_roots, groups=4, rank=4, scale=page.name)
        prompter, weights_note = viz.display_prompter(image_size=page.image_size, groups=4, rank=4, tau=4.0,
                                                      v_threshold=0.0, v_reset=0.0, weights=weights, seed=0)
        samples = viz.sample_images(page.num_sample_images, prompter.image_size, root=data_root, seed=0)
        dissected, banner_scale, trained = None, page.name, weights is not None
        if trained:
            what = f"the fallback prompt from {viz.shown_path(weights)}"
            fallbacks.append(f"{search.reason}. So this page dissects a trained prompt it found instead ({weights_note}): "
                             f"a short run's prompt barely leaves its zero start, so its spikes, sparsity and "
                             f"correlations show how the code works, not what a trained LoRSP learns.")
        else:
            what = "the random display basis (NOT trained)"
            fallbacks.append(f"{search.reason}; and no trained LoRSP prompt weights (G=4, r=4) elsewhere, so the "
                             f"factors use a random, non-zero basis B drawn for display (see 'prompt weights').")
        facts = {"scale": page.name, "prompt weights": weights_note,
                 "prompter": f"LoRSP, G={prompter.groups}, r={prompter.rank}, "
                             f"{prompter.image_size[0]}×{prompter.image_size[1]} px"}
    facts["images"] = f"{samples.note}: {', '.join(samples.names)}"
    facts["this page"] = ("trains nothing: the prompt is computed before any backbone, from the weights named "
                          "above")
    if samples.synthetic and dissected is not None and dissected.config.dataset == "synthetic":
        fallbacks.append("the record was trained, and is shown, on lorsp's procedural synthetic dataset, not on "
                         "real images")
    elif samples.synthetic:
        fallbacks.append(f"synthetic images instead of real ones: {samples.note}")
    facts["fallbacks"] = fallbacks
    return DissectionSubject(prompter, samples, facts, banner_scale, what, trained, dissected)
