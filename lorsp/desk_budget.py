"""How long a grid of runs takes on a 2-core CPU, planned from measured per-image costs (the ``desk`` scale).

The costs come from ``benchmarks/cpu-desk-costs.json`` (written by ``benchmarks/desk_costs.py``): the real
trainer and the real MobileNetV2 on real CIFAR-10, timed in CPU seconds of one thread on a machine shared
by several sessions, each cost as a multiple of the backbone *floor* (forward + input backward) measured in
the same round. A multiple of the floor does not depend much on the load; seconds do. The plan turns the
multiples into seconds on an **unloaded** 2-core machine (two torch threads) with the floor measured there
(:data:`UNLOADED_FLOOR`): at 128 px the committed ``lorsp bench`` record
``benchmarks/cpu-mobilenetv2-128-a.json`` (load average 1.0: 395 ms for 32 images), at 64 px the 333–346 ms
for 64 images that issue 17 reports for the same floor on this machine; other sizes scale from the nearest
of those by the measured one-thread floor. A step is planned at no less than ``lorsp bench``'s ratio to the
floor (:data:`BENCH_STEP_X_FLOOR`) plus the measured decoding, and :data:`SAFETY` is added for what the
model leaves out (checkpoints, Python overhead, the load of a machine that is not quite idle).

A run's planned seconds (:func:`run_seconds`):

- prompted methods: ``n_train × epochs × step(method, size) + evaluations × n_test × (forward + decode)``,
  plus a label-mapping pass over the training images every epoch for ILM-VP;
- linear probing (features cached once): ``(n_train + n_test) × (forward + decode)`` at the run's size;
- every run: :data:`RUN_OVERHEAD_SECONDS` (building the model, reading the images' index, writing files).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = ["COSTS_FILE", "UNLOADED_FLOOR", "UNLOADED_FLOOR_128", "BENCH_STEP_X_FLOOR", "SAFETY", "CostModel", "load_costs", "run_seconds", "plan",
           "format_plan", "NUM_CLASSES", "PILOT_FILE", "backbone_cost_ratio", "seeds_needed", "seed_plan"]

_REPO = Path(__file__).resolve().parent.parent
#: the measured per-image costs (multiples of the floor) this plan uses
COSTS_FILE = _REPO / "benchmarks" / "cpu-desk-costs.json"
#: seconds per image of the floor (MobileNetV2, forward + input backward, 2 threads) on this machine unloaded:
#: 128 px: 395.48 ms / 32 images (``benchmarks/cpu-mobilenetv2-128-a.json``, load average 1.0); 64 px: 340 ms /
#: 64 images (issue 17: 333–346 ms)
UNLOADED_FLOOR = {64: 0.340 / 64, 128: 0.39548 / 32}
UNLOADED_FLOOR_128 = UNLOADED_FLOOR[128]
#: ``lorsp bench``'s paired step-to-floor ratios on this machine (benchmarks/README.md: LoR-VP 1.00–1.03,
#: the eager LoRSP 1.11–1.13); the trainer's step is planned at no less than these plus its decoding
BENCH_STEP_X_FLOOR = {"step:lorvp": 1.03, "step:lorsp": 1.13, "step:ilm": 1.03}
#: extra share of time planned for what the cost model leaves out
SAFETY = 0.15
RUN_OVERHEAD_SECONDS = 8.0
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "tiny-imagenet": 200, "synthetic": 10}
#: methods the costs file has no step for, costed as a measured one (the factor-based prompters as LoRSP,
#: which is the dearest of them; the padding and border prompts as LoR-VP: all three add one tensor to x)
STEP_AS = {"lpf": "lorsp", "topk": "lorsp", "dropout": "lorsp", "pad": "lorvp", "evp": "lorvp",
           "vpt": "lorvp"}


@dataclass
class CostModel:
    """Unloaded seconds per image: ``floor[size]`` and the multiples ``x_floor[what][size]``."""

    floor: dict[int, float]
    x_floor: dict[str, dict[int, float]]
    source: str = ""
    #: a run's time on a backbone as a multiple of MobileNetV2's (the costs above are MobileNetV2's); filled from
    #: the desk pilot (:func:`backbone_cost_ratio`) the first time a backbone is asked for
    backbones: dict[str, float] = field(default_factory=lambda: {"mobilenetv2": 1.0})

    def backbone_ratio(self, backbone: str) -> float:
        if backbone not in self.backbones:
            self.backbones[backbone] = backbone_cost_ratio(backbone)
        return self.backbones[backbone]

    def per_image(self, what: str, size: int) -> float:
        """Planned unloaded seconds per image of ``what`` (``"forward"``, ``"decode"``, ``"step:lorsp"``...)."""
        multiples = self.x_floor.get(what)
        if not multiples:
            raise KeyError(f"{self.source or 'the cost model'} has no measured {what!r}; it has "
                           f"{sorted(self.x_floor)}")
        return _interpolate(multiples, size) * self.floor_at(size)

    def floor_at(self, size: int) -> float:
        return _interpolate(self.floor, size)

    def step(self, method: str, head: str, size: int) -> float:
        name = "ilm" if head == "ilm" else STEP_AS.get(method, method)
        key = f"step:{name}"
        if key not in self.x_floor and name == "ilm":
            key = "step:lorvp"
        return self.per_image(key, size)


def _interpolate(values: dict[int, float], size: int) -> float:
    """``values`` at ``size``: exact, else linear in pixels between measured sizes (extrapolated beyond)."""
    if size in values:
        return values[size]
    sizes = sorted(values)
    if len(sizes) == 1:
        return values[sizes[0]] * (size / sizes[0]) ** 2
    lo, hi = (sizes[0], sizes[1]) if size < sizes[0] else (sizes[-2], sizes[-1]) if size > sizes[-1] else \
        next((a, b) for a, b in zip(sizes, sizes[1:]) if a <= size <= b)
    t = (size ** 2 - lo ** 2) / (hi ** 2 - lo ** 2)
    return values[lo] + t * (values[hi] - values[lo])


def load_costs(path=None) -> CostModel:
    """The cost model of ``path`` (default :data:`COSTS_FILE`): medians over rounds of each multiple of the floor
    (a step no less than :data:`BENCH_STEP_X_FLOOR` plus decoding), the floor in unloaded seconds calibrated
    to :data:`UNLOADED_FLOOR` at the nearest calibrated size."""
    path = Path(path or COSTS_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the measured per-image costs of the desk plan are missing; run "
                                f"`python benchmarks/desk_costs.py --out {path}`")
    rows = json.loads(path.read_text())["rows"]
    floor_cpu: dict[int, list[float]] = {}
    multiples: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        size, what = int(row["image_size"]), row["what"]
        if what == "floor":
            floor_cpu.setdefault(size, []).append(float(row["cpu_seconds_per_image"]))
        else:
            multiples.setdefault(what, {}).setdefault(size, []).append(float(row["x_floor"]))
    anchors = [size for size in UNLOADED_FLOOR if size in floor_cpu]
    if not anchors:
        raise ValueError(f"{path}: no floor at {sorted(UNLOADED_FLOOR)} px, the sizes of the unloaded calibration")
    cpu = {s: statistics.median(v) for s, v in floor_cpu.items()}
    floor = {}
    for size, seconds in cpu.items():
        anchor = min(anchors, key=lambda a: abs(a - size))
        floor[size] = UNLOADED_FLOOR[anchor] * seconds / cpu[anchor]
    x_floor = {what: {s: statistics.median(v) for s, v in by_size.items()} for what, by_size in multiples.items()}
    for what, least in BENCH_STEP_X_FLOOR.items():
        for size, value in x_floor.get(what, {}).items():
            decode = x_floor.get("decode", {}).get(size, 0.0)
            x_floor[what][size] = max(value, least + decode)
    return CostModel(floor, x_floor, source=str(path))


def _count(run: dict, key: str) -> int:
    """The images of a split of ``run`` (``train_per_class``, ``test_per_class``, ``val_per_class``)."""
    classes = NUM_CLASSES.get(run.get("dataset"))
    per_class = run.get(key)
    if classes is None or per_class is None:
        raise ValueError(f"cannot plan run on {run.get('dataset')!r} with {key}={per_class!r}: the plan needs a "
                         f"dataset of {sorted(NUM_CLASSES)} and a number of images per class")
    return classes * int(per_class)


def evaluations(epochs: int, eval_every: int = 1) -> int:
    """How many epochs a run evaluates: every ``eval_every``-th and the last."""
    return len({e for e in range(1, epochs + 1) if e % eval_every == 0} | {epochs})


def run_seconds(run: dict, costs: CostModel, safety: float = SAFETY) -> float:
    """Planned unloaded seconds of one run (a grid's run dict: dataset, method, head, image_size, epochs...)."""
    size, epochs = int(run["image_size"]), int(run["epochs"])
    n_train, n_test = _count(run, "train_per_class"), _count(run, "test_per_class")
    n_val = _count(run, "val_per_class") if run.get("val_per_class") else 0  # evaluated alongside the test set
    look = costs.per_image("forward", size) + costs.per_image("decode", size)
    if run.get("method", "none") in ("none", None) and run.get("head", "linear") == "linear":
        seconds = (n_train + n_test + n_val) * look
    else:
        seconds = n_train * epochs * costs.step(run["method"], run.get("head", "linear"), size)
        seconds += evaluations(epochs, int(run.get("eval_every", 1))) * (n_test + n_val) * look
        if run.get("head") == "ilm":
            seconds += epochs * n_train * look
    for shift in run.get("tags", {}).get("eval_on", []) or []:
        seconds += n_test * look  # the OOD chapter's shifted test sets
    seconds *= costs.backbone_ratio(run.get("backbone", "mobilenetv2"))
    return (seconds + RUN_OVERHEAD_SECONDS) * (1.0 + safety)


def plan(chapters: dict[str, Sequence[dict]], costs: CostModel | None = None, *,
         key: Callable[[dict], str]) -> list[dict[str, Any]]:
    """One row per run to train, chapter by chapter in the given order: a run listed by an earlier chapter
    (same ``key(run)``) is not counted again. Rows: chapter, key, label, dataset, seed, seconds.

    ``key`` names a run (the experiments pass :func:`lorsp.experiments.run_key`): this module sits below
    :mod:`lorsp.experiments`, which imports it, so it takes the key rather than importing it."""
    costs = costs or load_costs()
    seen, rows = set(), []
    for chapter, runs in chapters.items():
        for run in runs:
            k = key(run)
            if k in seen:
                shifts = run.get("tags", {}).get("eval_on") or []
                if shifts:  # a run trained by an earlier chapter, evaluated on this chapter's shifted sets
                    look = costs.per_image("forward", int(run["image_size"])) + \
                        costs.per_image("decode", int(run["image_size"]))
                    rows.append(dict(chapter=chapter, key=f"{k}:shifted", label=run.get("tags", {}).get("label"),
                                     dataset=run.get("dataset"), seed=run.get("seed"),
                                     seconds=len(shifts) * _count(run, "test_per_class") * look * (1.0 + SAFETY)
                                     * costs.backbone_ratio(run.get("backbone", "mobilenetv2"))))
                continue
            seen.add(k)
            rows.append(dict(chapter=chapter, key=k, label=run.get("tags", {}).get("label"),
                             dataset=run.get("dataset"), seed=run.get("seed"),
                             seconds=run_seconds(run, costs)))
    return rows


def format_plan(rows: Iterable[dict], done: set[str] | frozenset = frozenset(),
                chapters: Sequence[str] = ()) -> str:
    """A table of planned hours per chapter (runs to do, runs done, hours to do); ``chapters`` are listed
    even when all their runs were counted by an earlier chapter."""
    by_chapter: dict[str, list[dict]] = {name: [] for name in chapters}
    for row in rows:
        by_chapter.setdefault(row["chapter"], []).append(row)
    lines = [f"{'chapter':<16} {'runs':>5} {'done':>5} {'planned h':>10} {'left h':>8}"]
    total = left = 0.0
    count_runs = count_done = 0
    for chapter, items in by_chapter.items():
        hours = sum(r["seconds"] for r in items) / 3600
        todo = sum(r["seconds"] for r in items if r["key"] not in done) / 3600
        total, left = total + hours, left + todo
        runs = [r for r in items if not r["key"].endswith(":shifted")]
        n_done = sum(r["key"] in done for r in runs)
        count_runs, count_done = count_runs + len(runs), count_done + n_done
        lines.append(f"{chapter:<16} {len(runs):>5} {n_done:>5} {hours:>10.2f} {todo:>8.2f}")
    lines.append(f"{'all':<16} {count_runs:>5} {count_done:>5} {total:>10.2f} {left:>8.2f}")
    return "\n".join(lines)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else \
        f"{seconds:.0f} s"



# ----------------------------------------------------------------------------------------------------
# the backbone's cost beside MobileNetV2's (desk protocol v2, issue 25)
# ----------------------------------------------------------------------------------------------------
#: the pilot of the second desk protocol (``benchmarks/desk_pilot.py``): paired runs on both backbones
PILOT_FILE = _REPO / "benchmarks" / "cpu-desk-pilot.json"


def backbone_cost_ratio(backbone: str, path=None, reference: str = "mobilenetv2") -> float:
    """How many times ``reference``'s time a run on ``backbone`` takes: the median, over the pilot's pairs (same
    method and prompt lr, trained one after the other on the same machine), of the ratio of their seconds per
    training image and epoch. 1.0 for ``reference`` itself. Raises ``ValueError`` naming the file when the
    pilot has no such pair."""
    if backbone == reference:
        return 1.0
    path = Path(path or PILOT_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the desk pilot's record is missing; run `python benchmarks/desk_pilot.py`")
    rows = [r for r in json.loads(path.read_text())["rows"] if "seconds_per_train_image_epoch" in r]
    by = {(r["label"], r["prompt_lr"], r["backbone"]): r["seconds_per_train_image_epoch"] for r in rows}
    ratios = [by[(label, lr, backbone)] / seconds for (label, lr, name), seconds in by.items()
              if name == reference and (label, lr, backbone) in by]
    if not ratios:
        raise ValueError(f"{path}: no pair of runs on {backbone!r} and {reference!r} (same method and prompt lr)")
    return float(statistics.median(ratios))


# ----------------------------------------------------------------------------------------------------
# how many seeds a headline pair needs (issue 25)
# ----------------------------------------------------------------------------------------------------
def seeds_needed(paired_sd: float, claimed: float, cap: int = 10, minimum: int = 3) -> tuple[int, float]:
    """``(n, detectable)``: the fewest seeds in ``[minimum, cap]`` whose 80%-power detectable difference
    (:func:`lorsp.stats.detectable_difference`, the paired t-test's noncentral t) is at most ``|claimed|``
    (the paper's difference, pp), and that difference at ``n``; ``cap`` when even ``cap`` seeds do not reach
    it (then ``detectable > |claimed|``: the pair stays underpowered, and the plan says so)."""
    from .stats import detectable_difference
    if not (paired_sd > 0 and math.isfinite(paired_sd)):
        raise ValueError(f"paired_sd must be a positive finite number (pp), got {paired_sd!r}")
    if not 2 <= minimum <= cap:
        raise ValueError(f"need 2 <= minimum <= cap, got minimum={minimum!r}, cap={cap!r}")
    for n in range(minimum, cap + 1):
        detectable = detectable_difference(n, paired_sd)
        if detectable <= abs(claimed):
            return n, detectable
    return cap, detectable_difference(cap, paired_sd)


def seed_plan(paired_sds: dict[tuple, float], claimed: dict[tuple, float], cap: int = 10,
              minimum: int = 3) -> list[dict[str, Any]]:
    """One row per headline pair (a key of ``paired_sds``, e.g. ``(dataset, better, worse)``): its paired sd and
    the paper's claimed difference (``claimed[key]``, pp), the seeds it needs (:func:`seeds_needed`) and whether
    they reach the claim (``powered``)."""
    rows = []
    for key, sd in paired_sds.items():
        if key not in claimed:
            raise KeyError(f"no claimed difference for pair {key!r}; claimed has {sorted(claimed)}")
        n, detectable = seeds_needed(sd, claimed[key], cap, minimum)
        rows.append(dict(pair=key, paired_sd=sd, claimed=claimed[key], seeds=n, detectable=detectable,
                         powered=detectable <= abs(claimed[key])))
    return rows
