"""The book's experiment grids (Tables II–VI, Figs. 3a, 4, 5), run through the engine, and the claims.

Every experiment chapter of the book does the same four things, all from here:

1. :func:`grid` ``(chapter, scale)`` — the list of runs of that chapter at that scale. A run is a flat,
   JSON-able dict of :class:`lorsp.train.TrainConfig` fields (``backbone, dataset, method, head, epochs,
   ...`` and the prompter's options such as ``groups, rank, tau, v_threshold, keep_ratio``) plus a
   ``"tags"`` dict (the method's label in the paper's words, the chapter...) that is not passed to the
   trainer. Runs are identified by :func:`run_key` (a hash of the config without tags), so a run shared by
   two chapters (LoRSP at G=4, r=4 is in four of them) is trained once.
2. :func:`run_grid` ``(runs, results_dir, resume=True)`` — trains each run with ``lorsp.train.train``
   unless its record ``<results_dir>/<key>/record.json`` exists (so an interrupted chapter resumes), and returns a
   DataFrame with one row per run (accuracy in percent, firing rate, sparsity, seconds...).
3. :func:`summarise` (mean ± std over seeds) and :func:`compare`: the paper's numbers (labelled, from
   :mod:`lorsp.paper`), ours at this scale and ours at larger scales (records committed under
   ``results/<scale>/``) side by side.
4. :func:`claims` — which of the paper's claims hold at this scale, computed from the numbers: runs are
   paired by seed and each pair gets :func:`lorsp.stats.paired_verdict` (95% t-interval of the paired
   difference: holds, reversed, equivalent within ±0.5 pp, or inconclusive), a claim's pairs combined by
   Holm's rule; failed or diverged runs are left out and named (:func:`failed_runs`).

Scales (``LORSP_SCALE``, :mod:`lorsp.scale`): ``smoke`` (CPU, seconds per run, CI), ``mini`` (one GPU,
MobileNetV2 on CIFAR-10 / Tiny-ImageNet subsets at the full protocol) and ``paper`` (the paper's
backbones and datasets). :func:`scale_setup` says exactly which data, weights, image counts, resolution
and epochs a scale uses, and which fallbacks it took.

The package, one job per module: :mod:`.scales` (what each scale runs), :mod:`.methods` (the paper's method
labels and their engine configs), :mod:`.grid` (each chapter's runs, run keys, the runs folder, banner
facts), :mod:`.records` (run records and their rows), :mod:`.runner` (training through the engine, the
command line ``python -m lorsp.experiments``), :mod:`.evaluation` (shifted test sets, trained models),
:mod:`.tables` (summaries and side-by-side tables), :mod:`.claims` (the paper's claims checked on the
numbers), :mod:`.gallery` (Fig. 5), :mod:`.dissection` (the committed trained prompt that the method chapter
``prompt_factorisation`` dissects), :mod:`.evidence` (which scale a chapter's headline comes from, training
curves, what the resolution costs) and :mod:`.findings` (every chapter's verdicts on one page). Everything
public is importable from ``lorsp.experiments``.
"""
from __future__ import annotations

from .claims import (LEVEL, MARGIN_PP, PAIR_ON, Claim, chapter_claims, claim_pairs, claims, closing_paragraph,
                     paired_values, rule_description)
from .evidence import (FLATTENED_BELOW, HEADLINE_SCALES, Evidence, committed_status, flattening, flattening_sentence,
                       headline_evidence, prompt_lr_deviation, resolution_cost, training_curves,
                       training_length_check)
from .dissection import (DISSECTION_SCALES, DissectedPrompt, DissectionSearch, DissectionSubject,
                         dissection_candidates, dissection_images, dissection_subject, find_dissection_record,
                         load_dissected_prompt, measured_sentences, prompt_measurements)
from .findings import CLAIM_CHAPTERS, VERDICT_COLOURS, VERDICTS, Findings, findings
from .evaluation import engine_evaluate_shifts, evaluate_shifts, load_run_model, test_set_of
from .gallery import Gallery, GalleryPanel, gallery_claims, instance_variation, prompt_gallery, varying_share
from .grid import (BACKBONE_ROWS, CHAPTERS, DEVIATION_LABELS, DOWNSTREAM_ROWS, GROUPS_SWEEP, OOD_FACTORS,
                   OOD_ROWS, RANK_SWEEP, LP_224_LABEL, RESULTS_ROOT, RUNS_ROOT, SPARSIFIER_RATIOS, SPARSIFIER_ROWS,
                   TAU_SWEEP, V_THRESHOLD_SWEEP, chapter_facts, deviation_label, grid, is_deviation_of, missing_methods,
                   results_root, run_key, runs_dir, shown_path, training_length_label)
from .grid import desk2_seed_plan, paired_sds, paper_lr_label, search_label, select_prompt_lrs, selection_key  # v2
from .methods import (DOWNSTREAM_FACTORS, EVP_PAD_AT_224, LORSP_LIF_DEFAULTS, METHOD_LABELS, PAD_INNER_AT_224,
                      TRANSFORMER_BACKBONES, label_of, method_config, not_applicable, unavailable)
from .records import ACCURACY, collect, describe_failed, failed_runs, records_frame, usable_rows
from .runner import PUBLISHED_FILES, RUN_ORDER, dry_run, machine_info, main, run_grid, train_one
from .runs import run_config
from .store import RecordStore, read_run_record
from .staleness import replay_losses, stale_records
from .scales import DESK_DATASETS, DESK_PROMPT_LR, PAPER_EPOCHS, SCALES, ScaleSetup, desk_missing, desk_setup, scale_setup
from .scales import DESK2_DATASETS, DESK2_METHOD_SEEDS, DESK2_PROMPT_LR_SEARCH, DESK_PROTOCOLS, desk2_setup
from .tables import (PAPER_HYPER_FINDINGS, chapter_table, compare, hyper_long, larger_scales, load_larger,
                     ood_long, style_claims, style_compare, summarise, sweep_frame)

__all__ = [
    "SCALES", "CHAPTERS", "METHOD_LABELS", "ScaleSetup", "scale_setup", "method_config", "label_of", "grid",
    "run_key", "run_config", "RecordStore", "read_run_record", "run_grid", "collect", "records_frame", "summarise", "compare", "style_compare", "style_claims",
    "larger_scales", "load_larger", "sweep_frame", "Claim", "claims", "claim_pairs", "evaluate_shifts", "RESULTS_ROOT",
    "RUNS_ROOT", "runs_dir", "results_root", "ACCURACY", "not_applicable", "chapter_facts", "chapter_table", "chapter_claims",
    "closing_paragraph", "ood_long", "hyper_long", "prompt_gallery", "gallery_claims", "load_run_model",
    "test_set_of", "train_one", "missing_methods", "unavailable",
    "BACKBONE_ROWS", "DOWNSTREAM_ROWS", "OOD_ROWS", "SPARSIFIER_ROWS", "PAPER_HYPER_FINDINGS", "Gallery",
    "GalleryPanel", "engine_evaluate_shifts", "main", "DOWNSTREAM_FACTORS", "OOD_FACTORS", "LORSP_LIF_DEFAULTS",
    "SPARSIFIER_RATIOS", "GROUPS_SWEEP", "RANK_SWEEP", "TAU_SWEEP", "V_THRESHOLD_SWEEP", "PAD_INNER_AT_224",
    "TRANSFORMER_BACKBONES", "EVP_PAD_AT_224", "MARGIN_PP", "LEVEL", "PAIR_ON", "paired_values", "rule_description", "failed_runs",
    "usable_rows", "describe_failed", "instance_variation", "varying_share", "shown_path",
    "HEADLINE_SCALES", "Evidence", "committed_status", "headline_evidence", "training_curves", "resolution_cost",
    "flattening", "flattening_sentence", "FLATTENED_BELOW", "LP_224_LABEL", "prompt_lr_deviation", "deviation_label", "is_deviation_of", "DEVIATION_LABELS",
    "training_length_check", "training_length_label", "PAPER_EPOCHS",
    "CLAIM_CHAPTERS", "VERDICTS", "VERDICT_COLOURS", "Findings", "findings",
    "PUBLISHED_FILES", "RUN_ORDER", "dry_run", "machine_info", "DESK_DATASETS", "DESK_PROMPT_LR",
    "desk_missing", "desk_setup", "replay_losses", "stale_records",
    "DESK_PROTOCOLS", "DESK2_DATASETS", "DESK2_METHOD_SEEDS", "DESK2_PROMPT_LR_SEARCH", "desk2_setup",
    "desk2_seed_plan", "paired_sds", "paper_lr_label", "search_label", "select_prompt_lrs", "selection_key",
    "DISSECTION_SCALES", "DissectedPrompt", "DissectionSearch", "dissection_candidates", "dissection_images",
    "DissectionSubject", "dissection_subject",
    "find_dissection_record", "load_dissected_prompt", "measured_sentences", "prompt_measurements",
]
