"""The window's records: which runs are final, the summary (with the accuracy table) and the ``.tar.gz`` bundle,
each written atomically after every run."""
from __future__ import annotations

import json
import os
import statistics
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..experiments.store import RecordStore
from .plan import WINDOW_SCALE


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
    store = RecordStore(results_dir)
    for item in plan:
        if item["shared_with"] or not store.exists(item["key"]):
            continue
        record = store.read(item["key"])
        if record.get("final_accuracy") is None:
            continue
        run = item["run"]
        groups.setdefault((item["block"], run["dataset"], run["tags"]["label"]), []).append(
            100.0 * float(record["final_accuracy"]))
    return [dict(block=b, dataset=d, label=label, seeds=len(v), accuracy_pct=statistics.fmean(v),
                 std_pct=statistics.stdev(v) if len(v) > 1 else None) for (b, d, label), v in groups.items()]


@dataclass
class WindowState:
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
