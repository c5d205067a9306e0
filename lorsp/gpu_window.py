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
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WINDOW_DATASETS", "SMOKE_DATASETS", "BLOCKS", "WINDOW_SCALE", "WindowError", "Costs", "window_setup",
           "window_plan", "estimate_seconds", "measure_costs", "costs_from_bench", "plan_table", "check_pack",
           "run_window", "add_arguments", "main"]

WINDOW_SCALE = "mini-window"
#: images per class of the window (a pack of these takes 39.2 MiB with the weights: lorsp.data.pack)
WINDOW_DATASETS = {"cifar10": {"train_per_class": 256, "test_per_class": 100},
                   "tiny-imagenet": {"train_per_class": 8, "test_per_class": 2}}
#: the same plan at tiny sizes (64 px, 1 epoch, seed 0 only), for a CPU (tests)
SMOKE_DATASETS = {"cifar10": {"train_per_class": 2, "test_per_class": 1},
                  "tiny-imagenet": {"train_per_class": 1, "test_per_class": 1}}
NUM_CLASSES = {"cifar10": 10, "tiny-imagenet": 200}
#: (block, chapter of lorsp.experiments, dataset kept or None for all), in order of importance
BLOCKS = (("table2-cifar10", "backbones", "cifar10"),
          ("table2-tiny-imagenet", "backbones", "tiny-imagenet"),
          ("ood", "ood", None),
          ("sparsifiers", "sparsifiers", None),
          ("hyperparameters", "hyperparameters", None),
          ("downstream", "downstream", None),
          ("gallery", "prompt_gallery", None))
#: the `lorsp bench` method whose step a label's training step costs
BENCH_METHOD = {"LP": "lp", "ILM-VP": "pad", "AutoVP": "pad", "EVP": "evp", "LoR-VP": "lorvp", "LPF": "lpf",
                "LoRSP": "lorsp", "Top-k": "topk", "Dropout": "dropout"}
WEIGHTS_FILE = "mobilenetv2_100_tflite_in1k.safetensors"


class WindowError(RuntimeError):
    """The window cannot run: no pack, no weights in it, no GPU where one was asked for."""


# ---------------------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------------------
def window_setup(smoke: bool = False, device: str | None = None):
    """mini's :class:`lorsp.experiments.ScaleSetup` with the window's image counts (``smoke``: tiny sizes)."""
    from .experiments import scale_setup

    mini = scale_setup("mini")
    counts = SMOKE_DATASETS if smoke else WINDOW_DATASETS
    changes = dict(scale=WINDOW_SCALE, datasets={name: dict(c) for name, c in counts.items()},
                   device=device or ("cpu" if smoke else "cuda"),
                   weights_note="MobileNetV2 (1.0, 224) ImageNet-1k weights from the pack (never a hub download)",
                   notes=["The GPU-window plan (lorsp.gpu_window): mini's chapters with fewer images, from a pack "
                          "of one fixed subset per dataset (every seed sees the same images)."])
    if smoke:
        # 64 px: EVP pads 30 px a side; one seed: the plan's shape, not its statistics, is what a smoke run checks
        changes.update(image_size=64, epochs=1, batch_size=8, seeds=(0,), hyper_seeds=(0,))
    return dataclasses.replace(mini, **changes)


def _label(run: dict) -> str:
    label = run["tags"]["label"]
    return label.split()[0] if label.startswith(("Top-k", "Dropout")) else label


def window_plan(smoke: bool = False, device: str | None = None, blocks=None) -> list[dict]:
    """The window's runs in order: dicts ``{block, run, key, shared_with}``; ``shared_with`` names the earlier
    block that lists the same run (same key), which is trained once. ``blocks`` keeps only those blocks."""
    from .experiments import grid, run_key

    setup = window_setup(smoke, device)
    known = [name for name, _, _ in BLOCKS]
    chosen = known if not blocks else list(blocks)
    unknown = [b for b in chosen if b not in known]
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; expected some of {known}")
    plan, first_seen = [], {}
    for name, chapter, dataset in BLOCKS:
        if name not in chosen:
            continue
        for run in grid(chapter, setup=setup):
            if dataset is not None and run["dataset"] != dataset:
                continue
            run["tags"]["block"] = name
            key = run_key(run)
            plan.append(dict(block=name, run=run, key=key, shared_with=first_seen.get(key)))
            first_seen.setdefault(key, name)
    return plan


# ---------------------------------------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Costs:
    """Seconds per image of one training step of each bench method, of the evaluation forward, and a fixed
    cost per run (building the model and data, checkpoints), and where they come from."""

    train: dict
    eval: float
    per_run: float
    source: str
    bench_rows: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"train_s_per_image": self.train, "eval_s_per_image": self.eval, "per_run_s": self.per_run,
                "source": self.source}


def estimate_seconds(run: dict, costs: Costs) -> float:
    """Expected seconds of ``run``: ``epochs × (train images × step cost + test images × eval cost)`` plus the
    fixed cost per run; LP (features cached by the engine) forwards its train and test images once; OOD runs
    add one evaluation of the test images per shifted set."""
    classes = NUM_CLASSES.get(run["dataset"], 10)
    n_train = (run.get("train_per_class") or 0) * classes
    n_test = (run.get("test_per_class") or 0) * classes
    label = _label(run)
    if label == "LP":
        seconds = (n_train + n_test) * costs.eval
    else:
        method = BENCH_METHOD.get(label, "lorsp")
        step = costs.train.get(method, max(costs.train.values()))
        seconds = run["epochs"] * (n_train * step + n_test * costs.eval)
    seconds += len(run.get("tags", {}).get("eval_on") or []) * n_test * costs.eval
    return seconds + costs.per_run


def _plan_methods(plan, image_size: int | None = None) -> tuple[list[str], dict]:
    """The bench methods of ``plan`` (``lp`` last) and each one's prompter options, from its first run; a
    padding prompt's inner size is scaled to ``image_size`` when that differs from the run's."""
    from dataclasses import fields

    from .train import TrainConfig

    config_keys = {f.name for f in fields(TrainConfig)} | {"tags"}
    options: dict = {}
    for item in plan:
        run = item["run"]
        method = BENCH_METHOD.get(_label(run), "lorsp")
        if method not in options:
            options[method] = {k: v for k, v in run.items() if k not in config_keys}
            if image_size and "inner_size" in options[method]:
                inner = options[method]["inner_size"] * image_size / run["image_size"]
                options[method]["inner_size"] = max(1, round(inner))
    options.pop("lp", None)
    return sorted(options) + ["lp"], options


def measure_costs(plan, device: str, steps: int = 3, warmup: int = 2, per_run: float = 3.0,
                  image_size: int | None = None, batch_size: int | None = None) -> Costs:
    """Time ``steps`` training steps of every method of ``plan`` (and LP's forward, the evaluation's cost) on
    ``device`` at the plan's batch size and resolution (or those given) with :func:`lorsp.bench.run_bench`,
    interleaved; ``per_run`` is the assumed fixed cost per run (corrected while the window runs)."""
    from .bench import run_bench

    first = plan[0]["run"]
    batch, size = batch_size or first["batch_size"], image_size or first["image_size"]
    methods, options = _plan_methods(plan, size)
    rows = run_bench(methods=methods, backbones=(first["backbone"],), batch_size=batch, image_size=size,
                     device=device, steps=steps, warmup=warmup, num_classes=10, prompter_kwargs=options)
    return costs_from_bench(rows, per_run=per_run,
                            source=f"measured at start on {device}: lorsp bench, batch {batch}, {size} px, "
                                   f"{warmup} warm-up + {steps} timed steps")


def costs_from_bench(rows, per_run: float = 3.0, floor_images_per_s: float | None = None, source: str = "") -> Costs:
    """:class:`Costs` from ``lorsp bench`` rows: each plan method's median step per image (the median over rows
    of the same method, e.g. from several records). With ``floor_images_per_s`` the rows' *ratios to the floor*
    (paired where recorded) are used instead, scaled to a floor of that many images per second: the way to
    carry costs measured on one device to an assumed speed of another. A plan method without a row costs as
    much as the costliest prompt method that has one (an upper bound: LoRSP's generator is the costliest), and
    ``source`` says which were so filled in."""
    wanted = set(BENCH_METHOD.values())
    values: dict = {}
    for row in rows:
        if row["method"] not in wanted:
            continue
        if floor_images_per_s:
            ratio = row.get("ratio_to_floor_paired") or row["ratio_to_floor"]
            seconds = ratio / floor_images_per_s
        else:
            seconds = row["step_ms"] / 1e3 / row["batch_size"]
        values.setdefault(row["method"], []).append(seconds)
    if "lp" not in values:
        raise ValueError("the bench rows have no 'lp' row (the evaluation forward's cost); bench with lp too")
    train = {method: statistics.median(v) for method, v in values.items()}
    prompts = {m: v for m, v in train.items() if m != "lp"}
    missing = sorted(wanted - set(train))
    if missing and prompts:
        costliest = max(prompts, key=prompts.get)
        for method in missing:
            train[method] = prompts[costliest]
        source += f"{'; ' if source else ''}no rows for {', '.join(missing)}: costed as {costliest} (upper bound)"
    return Costs(train=train, eval=train["lp"], per_run=per_run, source=source, bench_rows=list(rows))


def plan_table(plan, costs: Costs, done=frozenset()) -> tuple[list[dict], dict]:
    """One row per plan item (block, label, seed, dataset, images, epochs, estimated s, state) and the
    estimated seconds of each block's runs still to train (shared and finished runs cost nothing)."""
    rows, per_block = [], {}
    for item in plan:
        run = item["run"]
        classes = NUM_CLASSES.get(run["dataset"], 10)
        state = ("shared with " + item["shared_with"]) if item["shared_with"] else (
            "done" if item["key"] in done else "to run")
        seconds = estimate_seconds(run, costs) if state == "to run" else 0.0
        per_block[item["block"]] = per_block.get(item["block"], 0.0) + seconds
        rows.append(dict(block=item["block"], label=run["tags"]["label"], seed=run["seed"], dataset=run["dataset"],
                         train_images=run["train_per_class"] * classes, test_images=run["test_per_class"] * classes,
                         epochs=run["epochs"], estimated_s=seconds, state=state, key=item["key"]))
    return rows, per_block


def format_plan(rows, per_block, markdown: bool = False) -> str:
    lines = []
    if markdown:
        lines += ["| block | run | seed | dataset | train images | test images | epochs | estimated s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            est = f"{r['estimated_s']:.1f}" if r["state"] == "to run" else r["state"]
            lines.append(f"| {r['block']} | {r['label']} | {r['seed']} | {r['dataset']} | {r['train_images']:,} | "
                         f"{r['test_images']:,} | {r['epochs']} | {est} |")
    else:
        for r in rows:
            est = f"{r['estimated_s']:7.1f} s" if r["state"] == "to run" else r["state"]
            lines.append(f"  {r['block']:22s} {r['label']:12s} s{r['seed']} {r['dataset']:14s} "
                         f"{r['train_images']:6d}/{r['test_images']:5d} img × {r['epochs']:2d} ep  {est}")
    total = 0.0
    for block, seconds in per_block.items():
        total += seconds
        lines.append(f"{'' if not markdown else '- '}block {block}: {seconds / 60:.1f} min to run "
                     f"(cumulative {total / 60:.1f} min)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# running it
# ---------------------------------------------------------------------------------------------------------
def check_pack(pack) -> dict:
    """Verify the pack (every file's sha256) and that it holds the MobileNetV2 weights; return its manifest.
    :class:`WindowError` names the missing file and how to make it — there is no hub fallback."""
    from .data.pack import PackError, verify_pack

    pack = Path(pack)
    weights = pack / "weights" / WEIGHTS_FILE
    try:
        manifest = verify_pack(pack)
    except PackError as error:
        raise WindowError(f"{error}. Make the pack where the data are: `lorsp data import ../shared/data` then "
                          f"`lorsp data pack {pack}`") from error
    if WEIGHTS_FILE not in manifest.get("weights", {}) or not weights.is_file():
        raise WindowError(f"the pack {pack} holds no MobileNetV2 weights ({weights} is missing); the window refuses "
                          f"to run rather than fall back to a hub download. Import the weights into the data root "
                          f"(`lorsp data import ../shared/data`) and make the pack again (`lorsp data pack {pack}`)")
    return manifest


def _finished(path: Path) -> bool:
    """A record exists and is final (completed, or failed by divergence, which a rerun would repeat)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("status", "completed") == "completed" or str(record.get("reason") or "").startswith(
        "DivergenceError")


def _write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_bundle(results_dir: Path, keys, summary_path: Path, bundle: Path) -> None:
    """``bundle`` (.tar.gz, written atomically): ``<scale>/<key>/record.json`` and ``prompt.safetensors`` of
    every finished run, and the summary."""
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = bundle.with_name(bundle.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for key in keys:
            for name in ("record.json", "prompt.safetensors"):
                path = results_dir / key / name
                if path.is_file():
                    tar.add(path, arcname=f"{WINDOW_SCALE}/{key}/{name}")
        if summary_path.is_file():
            tar.add(summary_path, arcname=f"{WINDOW_SCALE}/summary.json")
    os.replace(tmp, bundle)


def _accuracy_table(plan, results_dir: Path) -> list[dict]:
    """Mean ± std (over seeds) of the final test accuracy per block, dataset and label, from the records."""
    groups: dict = {}
    for item in plan:
        path = results_dir / item["key"] / "record.json"
        if item["shared_with"] or not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("final_accuracy") is None:
            continue
        run = item["run"]
        groups.setdefault((item["block"], run["dataset"], run["tags"]["label"]), []).append(
            100.0 * float(record["final_accuracy"]))
    return [dict(block=b, dataset=d, label=label, seeds=len(v), accuracy_pct=statistics.fmean(v),
                 std_pct=statistics.stdev(v) if len(v) > 1 else None) for (b, d, label), v in groups.items()]


def run_window(results_dir, pack, minutes: float = 9.0, smoke: bool = False, device: str | None = None,
               blocks=None, bundle=None, summary=None, started: float | None = None, costs: Costs | None = None,
               log=print) -> dict:
    """Run the window plan into ``results_dir`` within ``minutes`` (from ``started``, a ``time.time()``, default
    now) and return the summary (also written to ``summary``, default ``<results_dir>/summary.json``).
    ``costs`` (default: measured on ``device`` first) feed the estimates. While it runs, the pack is the data
    root (``LORSP_DATA``) and the hub is off (``HF_HUB_OFFLINE``, ``LORSP_OFFLINE``); the caller's environment
    is restored when it returns or fails."""
    with _environment_kept(("LORSP_DATA", "HF_HUB_OFFLINE", "LORSP_OFFLINE")):
        return _run_window(results_dir, pack, minutes, smoke, device, blocks, bundle, summary, started, costs, log)


@contextlib.contextmanager
def _environment_kept(names):
    """Restore the environment variables ``names`` as they were (set or unset) on leaving the block."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_window(results_dir, pack, minutes, smoke, device, blocks, bundle, summary, started, costs, log) -> dict:
    started = time.time() if started is None else float(started)
    deadline = started + 60.0 * float(minutes)
    results_dir = Path(results_dir)
    device = device or ("cpu" if smoke else "cuda")
    plan = window_plan(smoke, device, blocks)
    manifest = _prepare(pack, plan, smoke, device)
    results_dir.mkdir(parents=True, exist_ok=True)
    done = {item["key"] for item in plan if _finished(results_dir / item["key"] / "record.json")}
    todo = [item for item in plan if not item["shared_with"] and item["key"] not in done]
    log(f"gpu-window: {len(plan)} plan entries, {len({i['key'] for i in plan})} unique runs, {len(done)} already "
        f"done, {len(todo)} to run; budget {minutes:g} min, {max(0.0, deadline - time.time()) / 60:.1f} min left")
    if costs is None and todo:
        t = time.time()
        costs = measure_costs(plan, device, steps=1 if smoke else 3, warmup=0 if smoke else 2)
        log(f"measured the step of every method in {time.time() - t:.1f} s ({costs.source}):")
        for method, seconds in costs.train.items():
            log(f"  {method:8s} {1e3 * seconds:8.3f} ms per image")
    state = _State(plan, results_dir, Path(summary) if summary else results_dir / "summary.json", bundle, started,
                   [item["key"] for item in plan if item["key"] in done and not item["shared_with"]])
    state.summary.update(_session_facts(smoke, device, minutes, pack, manifest, costs))
    if costs is not None:
        per_block = plan_table(plan, costs, done)[1]
        state.summary["expected_minutes"] = {b: s / 60 for b, s in per_block.items()}
        log("expected minutes per block, from the measured costs:\n" + format_plan([], per_block))
    _run_in_order(todo, costs, deadline, state, log)
    state.save()
    for row in state.summary["accuracy"]:
        spread = "" if row["std_pct"] is None else f" ± {row['std_pct']:.2f}"
        log(f"  {row['block']:22s} {row['dataset']:14s} {row['label']:12s} {row['accuracy_pct']:6.2f}{spread} % "
            f"({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})")
    log(f"gpu-window: {len(state.finished)} of {len({i['key'] for i in plan})} runs have records in {results_dir}; "
        f"{(time.time() - started) / 60:.1f} min since the start")
    return state.summary


def _prepare(pack, plan, smoke: bool, device: str) -> dict:
    """Check the pack (and that it holds the plan's images), make it the data root with no hub access, and
    check the device; return the pack's manifest."""
    import torch

    manifest = check_pack(pack)
    os.environ["LORSP_DATA"] = str(Path(pack).resolve())  # the pack is the data root: runs keep path-free keys
    os.environ["HF_HUB_OFFLINE"] = "1"  # timm never reaches for the hub here
    os.environ.setdefault("LORSP_OFFLINE", "1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WindowError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device (run the "
                          f"smoke plan on a CPU with DEVICE=cpu SMOKE=1)")
    needed = {item["run"]["dataset"] for item in plan}
    for name, counts in window_setup(smoke, device).datasets.items():
        held = manifest["datasets"].get(name, {}).get("splits", {})
        for split, key in (("train", "train_per_class"), ("test", "test_per_class")):
            has = held.get(split, {}).get("per_class", 0)
            if name in needed and has < counts[key]:
                raise WindowError(f"the pack {pack} holds {has} {split} images per class of {name}, the plan needs "
                                  f"{counts[key]}: make the pack with `lorsp data pack`"
                                  f"{' --dataset ' + name + '=TRAIN/TEST' if smoke else ''}")
    return manifest


def _session_facts(smoke, device, minutes, pack, manifest, costs) -> dict:
    import torch

    return dict(plan=WINDOW_SCALE, smoke=smoke, device=device, minutes=minutes,
                gpu=torch.cuda.get_device_name(0) if device.startswith("cuda") else None, torch=torch.__version__,
                pack=dict(path=str(pack), total_bytes=manifest.get("total_bytes"), created=manifest.get("created")),
                costs=costs.to_dict() if costs else None, runs=[], stopped=None)


@dataclass
class _State:
    """What a window has done so far, saved (summary, bundle) after every run."""

    plan: list
    results_dir: Path
    summary_path: Path
    bundle: object
    started: float
    finished: list
    summary: dict = field(default_factory=dict)

    def save(self) -> None:
        self.summary["accuracy"] = _accuracy_table(self.plan, self.results_dir)
        self.summary["elapsed_s"] = time.time() - self.started
        self.summary["finished_runs"] = len(self.finished)
        _write_json(self.summary, self.summary_path)
        if self.bundle:
            _write_bundle(self.results_dir, self.finished, self.summary_path, Path(self.bundle))


def _run_in_order(todo, costs: Costs, deadline: float, state: _State, log) -> None:
    """Train ``todo`` in order while each run's estimate, scaled by how the runs so far compared with theirs,
    still ends before ``deadline``; save the state after each run."""
    estimated_sum = actual_sum = 0.0
    for index, item in enumerate(todo):
        run = item["run"]
        estimate = estimate_seconds(run, costs)
        correction = min(5.0, max(0.5, actual_sum / estimated_sum)) if estimated_sum else 1.0
        left = deadline - time.time()
        if estimate * correction > left:
            state.summary["stopped"] = (f"before {item['block']} {run['tags']['label']} seed {run['seed']}: "
                                        f"expected {estimate * correction:.0f} s, {max(left, 0):.0f} s left; "
                                        f"{len(todo) - index} runs not started (run again to continue)")
            log("gpu-window: stopped " + state.summary["stopped"])
            return
        log(f"[{index + 1}/{len(todo)}] {item['block']}: {run['tags']['label']} seed {run['seed']} "
            f"({item['key']}), expected {estimate * correction:.1f} s")
        t = time.time()
        record = _train(run, state.results_dir)
        seconds = time.time() - t
        estimated_sum, actual_sum = estimated_sum + estimate, actual_sum + seconds
        state.finished.append(item["key"])
        accuracy = record.get("final_accuracy")
        state.summary["runs"].append(dict(key=item["key"], block=item["block"], label=run["tags"]["label"],
                                          seed=run["seed"], status=record.get("status"), estimated_s=estimate,
                                          seconds=seconds, accuracy_pct=None if accuracy is None else 100 * accuracy))
        log(f"    {record.get('status')} in {seconds:.1f} s (estimated {estimate:.1f} s), accuracy "
            f"{'–' if accuracy is None else f'{100 * accuracy:.2f}%'}")
        state.save()


def _train(run: dict, results_dir: Path) -> dict:
    """Train one run with the engine (its record is written atomically when it ends), score an OOD run on its
    shifted sets (stored in the record), and check that the backbone's weights came from the pack."""
    from .experiments import evaluate_shifts, train_one

    record = train_one(run, results_dir)
    if run.get("tags", {}).get("eval_on") and record.get("status") == "completed":
        evaluate_shifts([run], results_dir, progress=False)
    source = str(record.get("weights_source") or "")
    if source and not source.startswith("file:"):
        raise WindowError(f"run {run['tags']['label']} seed {run['seed']} got its weights from {source!r}, not from "
                          f"the pack's file; stopping (the window never uses downloaded weights)")
    return record


# ---------------------------------------------------------------------------------------------------------
# command line: lorsp gpu-window {plan,run}
# ---------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="window_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("plan", help="print the plan with estimated seconds per run and minutes per block")
    p.add_argument("--smoke", action="store_true", help="the tiny CPU plan")
    p.add_argument("--blocks", default=None, help="comma-separated blocks (default: all)")
    p.add_argument("--costs-from", required=True, nargs="+", metavar="BENCH_JSON",
                   help="`lorsp bench --output` records (with lp) to take the costs from (median over records)")
    p.add_argument("--floor-images-per-s", type=float, default=None,
                   help="carry the record's ratios to the floor to a device whose floor runs this many images/s")
    p.add_argument("--per-run-s", type=float, default=3.0, help="assumed fixed seconds per run (default 3)")
    p.add_argument("--results", default=None, help="a results folder: its finished runs cost nothing")
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    p = sub.add_parser("costs", help="time every method of the plan (lorsp bench) into the record that "
                                     "`plan --costs-from` reads")
    p.add_argument("--device", default="cuda")
    p.add_argument("--image-size", type=int, default=None, help="default: the plan's (224)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the plan's (256)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--output", required=True, help="the JSON record to write (lorsp bench's format)")
    p = sub.add_parser("run", help="check the pack, measure the steps, run the plan in order within --minutes")
    p.add_argument("--pack", required=True, help="the pack folder (`lorsp data pack`); it becomes the data root")
    p.add_argument("--out", default=f"results/{WINDOW_SCALE}", help="results folder (one folder per run)")
    p.add_argument("--minutes", type=float, default=9.0, help="time budget from --started (default 9)")
    p.add_argument("--started", type=float, default=None, help="the session's start (seconds since the epoch)")
    p.add_argument("--device", default=None, help="default cuda (cpu with --smoke)")
    p.add_argument("--smoke", action="store_true", help="the plan at tiny sizes (64 px, 1 epoch), for a CPU")
    p.add_argument("--blocks", default=None, help="comma-separated blocks (default: all, in order)")
    p.add_argument("--bundle", default=None, help="also keep a .tar.gz of every finished record here")
    p.add_argument("--summary", default=None, help="summary JSON (default OUT/summary.json)")


def main(args) -> int:
    blocks = [b for b in args.blocks.split(",") if b] if getattr(args, "blocks", None) else None
    if args.window_command == "plan":
        rows = [row for path in args.costs_from for row in json.loads(Path(path).read_text(encoding="utf-8"))["rows"]]
        costs = costs_from_bench(rows, per_run=args.per_run_s, floor_images_per_s=args.floor_images_per_s)
        print(f"costs ({costs.source or 'as measured'}): " + ", ".join(
            f"{m} {1e3 * v:.3f} ms/image" for m, v in sorted(costs.train.items())) + f"; {costs.per_run:g} s per run")
        plan = window_plan(args.smoke, None, blocks)
        done = set()
        if args.results:
            done = {i["key"] for i in plan if _finished(Path(args.results) / i["key"] / "record.json")}
        rows, per_block = plan_table(plan, costs, done)
        print(format_plan(rows, per_block, markdown=args.markdown))
        return 0
    if args.window_command == "costs":
        from .bench import bench_meta, format_table, write_json
        costs = measure_costs(window_plan(), args.device, steps=args.steps, warmup=args.warmup,
                              image_size=args.image_size, batch_size=args.batch_size)
        meta = {**bench_meta(args.device), "what": "lorsp gpu-window costs: every method of the window plan"}
        write_json(costs.bench_rows, args.output, meta=meta)
        print(format_table(costs.bench_rows))
        return 0
    summary = run_window(args.out, args.pack, minutes=args.minutes, smoke=args.smoke, device=args.device,
                         blocks=blocks, bundle=args.bundle, summary=args.summary, started=args.started,
                         log=lambda text: print(text, flush=True))
    return 0 if summary.get("finished_runs") else 1


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m lorsp.gpu_window", description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
