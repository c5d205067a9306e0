"""Running the window (:func:`run_window`): check the pack, measure the costs, train the runs in order while each still
fits the budget, and save the records after every run; the caller's environment is restored on return."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .costs import Costs, estimate_seconds, format_plan, measure_costs, plan_table
from .pack import WindowError, prepare_window
from .plan import WINDOW_SCALE, plan_backbones, window_plan
from ..experiments.store import RecordStore
from .records import WindowState


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
    manifest = prepare_window(pack, plan, smoke, device)
    results_dir.mkdir(parents=True, exist_ok=True)
    store = RecordStore(results_dir)
    done = {item["key"] for item in plan if store.is_final(item["key"])}
    todo = [item for item in plan if not item["shared_with"] and item["key"] not in done]
    log(f"gpu-window: {plan_backbones(plan)}")
    log(f"gpu-window: {len(plan)} plan entries, {len({i['key'] for i in plan})} unique runs, {len(done)} already "
        f"done, {len(todo)} to run; budget {minutes:g} min, {max(0.0, deadline - time.time()) / 60:.1f} min left")
    if costs is None and todo:
        t = time.time()
        costs = measure_costs(plan, device, steps=1 if smoke else 3, warmup=0 if smoke else 2)
        log(f"measured the step of every method in {time.time() - t:.1f} s ({costs.source}):")
        for method, seconds in costs.train.items():
            log(f"  {method:8s} {1e3 * seconds:8.3f} ms per image")
    state = WindowState(plan, results_dir, Path(summary) if summary else results_dir / "summary.json", bundle, started,
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


def _session_facts(smoke, device, minutes, pack, manifest, costs) -> dict:
    import torch

    return dict(plan=WINDOW_SCALE, smoke=smoke, device=device, minutes=minutes,
                gpu=torch.cuda.get_device_name(0) if device.startswith("cuda") else None, torch=torch.__version__,
                pack=dict(path=str(pack), total_bytes=manifest.get("total_bytes"), created=manifest.get("created")),
                costs=costs.to_dict() if costs else None, runs=[], stopped=None)


def _run_in_order(todo, costs: Costs, deadline: float, state: WindowState, log) -> None:
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
    from ..experiments import evaluate_shifts, train_one

    record = train_one(run, results_dir)
    if run.get("tags", {}).get("eval_on") and record.get("status") == "completed":
        evaluate_shifts([run], results_dir, progress=False)
    source = str(record.get("weights_source") or "")
    if source and not source.startswith("file:"):
        raise WindowError(f"run {run['tags']['label']} seed {run['seed']} got its weights from {source!r}, not from "
                          f"the pack's file; stopping (the window never uses downloaded weights)")
    return record
