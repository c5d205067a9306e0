"""``lorsp bench``: training-step cost of the prompt methods against the frozen backbone's floor.

For each backbone the *floor* is the cheapest step any input-level prompt can have: the frozen backbone's
forward on the normalised image plus the backward to the input (``x.requires_grad_()``), no prompt, no head.
The backbone is built as the trainer builds it (:func:`lorsp.backbones.fold_frozen_backbone`: batch norms
folded, "same" padding fixed for the image size), so the floor and every step use the same backbone.
Each method's step is a full training step of :class:`lorsp.model.PromptedModel` (prompt → normalise → frozen
backbone in eval mode → linear head): forward, cross-entropy, backward to the prompt and head parameters, SGD
step (momentum 0.9, method.md).

Methods (``--methods``): any registered prompter (``lorsp``, ``lorvp``, ``lpf``, …; ``lorsp`` is the
prompter's default: fused, ``backend="auto"``, i.e. compiled on CUDA, and on a CPU compiled when the compiled
gate of this shape is already built (``compiled_gate_cached``) or for runs planned to take at least
``CPU_COMPILE_MIN_STEPS`` steps, else eager: the bench tells the prompters its own length,
``warmup + steps``, or ``--run-steps N`` to stand for a run of N steps; each row says its ``lif_backend``);
``lorsp-reference``
(LoRSP with ``fused=False``: autograd through every LIF step); ``lorsp-fused`` (``backend="eager"``: the fused
G-step LIF recomputed in backward, as PyTorch operations, :func:`lorsp.prompters.fused.fused_lorsp_prompt`);
``lorsp-compiled`` (``backend="compile"``: inductor fuses the loop; built or loaded during warm-up, so give
it ``--warmup`` >= 2); ``lp`` (no prompt: the backbone's forward without gradients each step, then the head);
``lp-cached`` (the head on precomputed features, the same batches; its speed-up over ``lp`` is the epoch-time
ratio of Sec. "LP with cached features").

Measurements, all in one process with the configurations *interleaved* (round r times step r of every
configuration in turn, so machine load hits them alike): ``warmup`` untimed rounds, then ``steps`` timed rounds;
the median step time and its inter-quartile range (IQR). On CUDA every step is bracketed by
``torch.cuda.synchronize()``. Also per configuration:

- ``prompt_ms``: the prompt generator alone, forward + backward (median over the same rounds);
- ``peak_mem_mb``: CUDA: ``torch.cuda.max_memory_allocated`` over one step minus the memory allocated before
  it; CPU (Linux): the peak resident set size over one step (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs``) minus the resident size before it; ``None`` where neither is available;
- ``ratio_to_floor_paired`` / ``ratio_to_lorvp_paired``: the median over rounds of the ratio within a round
  (robust to load that drifts between rounds), with a distribution-free 95% interval for that median
  (``…_ci95``, :func:`median_ci`); ``ratio_to_floor`` / ``ratio_to_lorvp`` divide the medians;
- ``round_ms`` / ``floor_round_ms``: every timed step, in round order, so any other statistic can be recomputed;
- ``saved_mb``: bytes autograd keeps for backward during the forward (device-independent, parameters not
  counted), from :class:`lorsp.prompters.fused.SavedTensorMeter`.

Rows (one per method × backbone × batch size × image size × device) are dicts with at least ``method,
backbone, device, batch_size, image_size, step_ms, step_ms_iqr, floor_ms, ratio_to_floor, prompt_ms,
images_per_s, peak_mem_mb``; ``--output FILE`` writes ``{"meta": …, "rows": […]}`` as JSON.
"""
from __future__ import annotations

from .cli import DESCRIPTION, EPILOG, add_arguments, main
from .configs import DEFAULT_METHODS, SPECIAL_METHODS
from .measure import median_ci
from .report import format_table, write_json
from .run import ROW_KEYS, bench_meta, run_bench

__all__ = ["run_bench", "add_arguments", "main", "format_table", "bench_meta", "median_ci", "ROW_KEYS",
           "DESCRIPTION", "EPILOG", "DEFAULT_METHODS", "SPECIAL_METHODS", "write_json"]

