"""What the window's runs cost: seconds per image of each method's step (measured with :func:`lorsp.bench.run_bench`
or taken from ``lorsp bench`` records), each run's estimate, and the plan as a table of estimates."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .plan import BENCH_METHOD, NUM_CLASSES, window_run_label


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
    label = window_run_label(run)
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

    from ..engine import TrainConfig

    config_keys = {f.name for f in fields(TrainConfig)} | {"tags"}
    options: dict = {}
    for item in plan:
        run = item["run"]
        method = BENCH_METHOD.get(window_run_label(run), "lorsp")
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
    from ..bench import run_bench

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
