"""The whole trainer beside its step: ``lorsp train`` on real CIFAR-10 against ``lorsp bench``'s step of the same
method, backbone, batch and image size, in alternating rounds so that the machine's load hits both alike.

    LORSP_DATA=/path/to/data python benchmarks/trainer_vs_step.py --sizes 64,96 --rounds 3 \\
        --before /tmp/lorsp-3d6fe12 --output benchmarks/cpu-trainer-vs-step.json

Each round runs, per image size and in turn: one epoch of ``lorsp train`` (this checkout), the same with the
checkout given by ``--before`` (an older commit's worktree: the trainer before a change), and ``lorsp bench``
(the same method's step, interleaved with the backbone's floor). Every command runs in its own process, with
the real offline MobileNetV2 weights of the data root. The trainer's images/s is its training loop's
(``metrics[0].images_per_second``: data loading, the steps, the bookkeeping; evaluation excluded); the record
keeps the epoch's and the whole process's seconds as well. A regression of the input path shows as a falling
``train_over_step`` ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lorsp(checkout: Path, args: list[str]) -> tuple[dict, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lorsp", *args], env=env, cwd=checkout, capture_output=True,
                         text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"lorsp {' '.join(args)} failed in {checkout}:\n{out.stderr[-3000:]}")
    return out, seconds


def train_once(checkout: Path, size: int, opts) -> dict:
    with tempfile.TemporaryDirectory(prefix="lorsp-trainer-bench-") as tmp:
        args = ["train", "--dataset", "cifar10", "--backbone", "mobilenetv2", "--method", opts.method,
                "--image-size", str(size), "--batch-size", str(opts.batch_size), "--epochs", "1",
                "--train-per-class", str(opts.train_per_class), "--test-per-class", str(opts.test_per_class),
                "--device", "cpu", "--no-progress", "--output", str(Path(tmp) / "run")]
        _, seconds = _lorsp(checkout, args)
        record = json.loads((Path(tmp) / "run" / "record.json").read_text())
    row = record["metrics"][0]
    return {"images_per_s": row["images_per_second"], "train_seconds": row["train_seconds"],
            "epoch_seconds": row["epoch_seconds"], "process_seconds": seconds, "train_images": row["train_images"],
            "git_commit": record.get("git_commit"), "lif_backend": record.get("lif_backend")}


def bench_once(size: int, opts) -> dict:
    with tempfile.TemporaryDirectory(prefix="lorsp-step-bench-") as tmp:
        out = Path(tmp) / "bench.json"
        _lorsp(ROOT, ["bench", "--methods", opts.method, "--backbones", "mobilenetv2", "--batch-size",
                      str(opts.batch_size), "--image-size", str(size), "--device", "cpu", "--steps", str(opts.steps),
                      "--warmup", "2", "--quiet", "--output", str(out)])
        row = json.loads(out.read_text())["rows"][0]
    return {"images_per_s": row["images_per_s"], "step_ms": row["step_ms"], "floor_ms": row["floor_ms"],
            "lif_backend": row.get("lif_backend")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,96")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="lorsp")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-per-class", type=int, default=32, help="CIFAR-10 train images per class")
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8, help="lorsp bench's timed steps")
    parser.add_argument("--before", default=None, help="a worktree of an older commit: its trainer, timed too")
    parser.add_argument("--output", default=None)
    opts = parser.parse_args()
    if not os.environ.get("LORSP_DATA"):
        parser.error("set LORSP_DATA to the data root with CIFAR-10 and the MobileNetV2 weights")
    sizes = [int(s) for s in opts.sizes.split(",")]
    kinds = {"train": lambda size: train_once(ROOT, size, opts), "step": lambda size: bench_once(size, opts)}
    if opts.before:
        kinds["train_before"] = lambda size: train_once(Path(opts.before).resolve(), size, opts)
    rounds = {size: {kind: [] for kind in kinds} for size in sizes}
    load_before = list(os.getloadavg())
    for r in range(opts.rounds):
        order = list(kinds) if r % 2 == 0 else list(kinds)[::-1]
        for size in sizes:
            for kind in order:
                rounds[size][kind].append(kinds[kind](size))
                print(f"round {r + 1} {size} px {kind}: {rounds[size][kind][-1]['images_per_s']:.1f} images/s",
                      file=sys.stderr, flush=True)
                result = _result(rounds, opts, load_before, complete=False)
                if opts.output:  # what is measured so far, in case the run is cut short
                    Path(opts.output).write_text(json.dumps(result, indent=1) + "\n")
    result = _result(rounds, opts, load_before, complete=True)
    print(json.dumps(result["summary"], indent=1))
    if opts.output:
        Path(opts.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _paired(first, second) -> float | None:
    ratios = [a["images_per_s"] / b["images_per_s"] for a, b in zip(first, second)]
    return statistics.median(ratios) if ratios else None


def _result(rounds, opts, load_before, complete: bool) -> dict:
    summary = []
    for size, per in rounds.items():
        row = {"image_size": size, "rounds_done": {k: len(v) for k, v in per.items()},
               **{f"{k}_images_per_s": statistics.median(x["images_per_s"] for x in v) if v else None
                  for k, v in per.items()},
               "train_over_step_paired": _paired(per["train"], per["step"])}
        if "train_before" in per:
            row["before_over_step_paired"] = _paired(per["train_before"], per["step"])
            row["after_over_before_paired"] = _paired(per["train"], per["train_before"])
        summary.append(row)
    return {"meta": {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_before": load_before,
                     "loadavg_after": list(os.getloadavg()), "cpu_count": os.cpu_count(), "complete": complete,
                     "command": " ".join(sys.argv), "options": vars(opts)},
            "summary": summary, "rounds": {str(k): v for k, v in rounds.items()}}


if __name__ == "__main__":
    raise SystemExit(main())
