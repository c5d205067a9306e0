"""The GPU-window plan: the ``mini`` grid re-sized so that its most important runs fit ~10 minutes of one GPU.

GPU time here comes in windows of 15 minutes, start-up included, with commands of at most 10 minutes, no
network, and at most 64 MiB sent with the code. ``mini`` (105 runs, 224 px, 20 epochs) takes hours, so this
module runs mini's chapters in order of importance, each re-sized (:data:`WINDOW_DATASETS`):

===========================  =====================================================================================
block                        runs (MobileNetV2, 224 px, 20 epochs, batch 256, lr 0.01 — mini's protocol)
===========================  =====================================================================================
``table2-cifar10``           Tables II and V on CIFAR-10: LP, ILM-VP, AutoVP, EVP, LoR-VP, LPF, LoRSP × 3 seeds
                             (LP, LPF and LoRSP are Table V's ablation); sized to end well inside one window
``table2-tiny-imagenet``     the same seven methods on Tiny-ImageNet × 3 seeds
``ood``                      Table IV: LP, EVP, LoR-VP, LoRSP (G = r = 2) on Tiny-ImageNet, scored on 4 shifts
``sparsifiers``              Table VI: Top-k and Dropout at 10/20/50/80 % (LPF and LoRSP are shared)
``hyperparameters``          Figs. 3a and 4: G, r, tau, V_th sweeps of LoRSP
``downstream``, ``gallery``  Table III and Fig. 5: every run is shared with the blocks above (nothing new)
===========================  =====================================================================================

The runs are exactly ``lorsp.experiments.grid(chapter, setup=window_setup())``: mini's chapters with the
image counts of :data:`WINDOW_DATASETS` (scale label ``mini-window``). A run listed by two chapters has one run
key and is trained once. Within a block the runs go seed by seed, so a cut leaves whole seeds.

:func:`run_window` (``lorsp gpu-window run``; ``benchmarks/gpu_window.sh``) then:

1. checks the pack (:mod:`lorsp.data.pack`: sha256 of every file) and that it holds the MobileNetV2 weights —
   it refuses to run without them rather than let timm fall back to a hub download (``HF_HUB_OFFLINE=1`` as
   well), and checks after each run that the record's weights came from the pack's file;
2. times a few training steps of every method of the plan and the evaluation forward on the device
   (:func:`lorsp.bench.run_bench` at the plan's batch and resolution): seconds per image, *measured*;
3. prints the expected minutes of every block from those costs (:func:`estimate_seconds`) and trains the
   runs in order with :func:`lorsp.experiments.train_one`, each record written atomically the moment its run
   ends (``<out>/<run key>/record.json``); before each run it checks that the run's estimate — corrected by
   how the runs so far compared with their estimates — still ends inside ``minutes``, else stops there;
4. after each run rewrites ``summary.json`` and, with ``bundle``, a ``.tar.gz`` of every finished record and
   prompt (what a GPU machine's ``$OUT`` can carry back: a few files, not one per run).

A second invocation skips every run whose record is final, so a plan longer than one window continues in the
next. ``smoke=True`` is the same plan at tiny sizes (:data:`SMOKE_DATASETS`, 64 px, 1 epoch) for a CPU.

The package, one job a module: :mod:`~lorsp.gpu_window.plan` (the blocks and their runs),
:mod:`~lorsp.gpu_window.costs` (measured step costs, estimates), :mod:`~lorsp.gpu_window.pack` (the pack checked and
made the data root), :mod:`~lorsp.gpu_window.records` (final records, summary, bundle), :mod:`~lorsp.gpu_window.run`
(the window itself) and :mod:`~lorsp.gpu_window.cli` (``lorsp gpu-window``).
"""
from __future__ import annotations

from .cli import add_arguments, main
from .costs import Costs, costs_from_bench, estimate_seconds, measure_costs, plan_table
from .pack import WindowError, check_pack
from .plan import BLOCKS, SMOKE_DATASETS, WINDOW_DATASETS, WINDOW_SCALE, window_plan, window_setup
from .run import run_window

# module-level names of the former single module, still reached as lorsp.gpu_window.<name> (tests, notebooks)
from .costs import format_plan  # noqa: E402,F401
from .pack import WEIGHTS_FILE  # noqa: E402,F401
from .plan import BENCH_METHOD, NUM_CLASSES  # noqa: E402,F401

__all__ = ["WINDOW_DATASETS", "SMOKE_DATASETS", "BLOCKS", "WINDOW_SCALE", "WindowError", "Costs", "window_setup",
           "window_plan", "estimate_seconds", "measure_costs", "costs_from_bench", "plan_table", "check_pack",
           "run_window", "add_arguments", "main"]
