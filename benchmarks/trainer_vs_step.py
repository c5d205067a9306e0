"""The whole trainer beside its step: ``lorsp train`` on real CIFAR-10 against ``lorsp bench``'s step of the same
method, backbone, batch and image size, in alternating rounds so that the machine's load hits both alike.

    LORSP_DATA=/path/to/data python benchmarks/trainer_vs_step.py --sizes 64 --rounds 3 --epochs 2 \\
        --before /tmp/lorsp-866207a --output benchmarks/cpu-trainer-vs-step-desk-issue24.json

Each round runs, per image size and in turn: ``lorsp train`` (this checkout), the same with the checkout given by
``--before`` (an older commit's worktree: the trainer before a change), and ``lorsp bench`` (the same method's
step, interleaved with the backbone's floor); the order reverses every other round. Every command runs in its
own process, with the real offline MobileNetV2 weights of the data root. Before the rounds, the compiled LIF
gate of each shape is built (or found built) once, so that both trainers and the bench run the same gate (each
row records its ``lif_backend``), and each trainer runs once untimed (``--warmup-runs``: the decoded images of
the decode-once loader are kept on disk then, as in a grid's first run, and the files are in the page cache for
both). Evaluation runs once, after the last epoch (``--eval-every`` = the epochs, as the desk runs do).

Two measures per trainer: its training loop's images/s over all epochs (``train_images / train_seconds``:
data loading, the steps, the bookkeeping; evaluation excluded), against the step's (``train_over_step``); and
the **whole process's** wall seconds (start-up, data preparation, model, loaders, training, evaluation, the
record), this checkout against ``--before`` (``end_to_end_speedup``: before's seconds / this checkout's). Ratios
are paired by round (medians of the per-round ratios); the load average is recorded around every command, and
each trainer process's CPU seconds beside its wall seconds (``end_to_end_cpu_speedup``), a measure that other
processes' load disturbs less.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lorsp(checkout: Path, args: list[str]) -> tuple[dict, float, float]:
    """Run ``lorsp ARGS`` with ``checkout``'s code; its output, wall seconds and CPU seconds (all threads; less
    disturbed by other processes' load than the wall clock, though not immune to it)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cpu, start = _children_cpu_seconds(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lorsp", *args], env=env, cwd=checkout, capture_output=True,
                         text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu_seconds() - cpu
    if out.returncode:
        raise RuntimeError(f"lorsp {' '.join(args)} failed in {checkout}:\n{out.stderr[-3000:]}")
    return out, seconds, cpu


def train_once(checkout: Path, size: int, opts) -> dict:
    with tempfile.TemporaryDirectory(prefix="lorsp-trainer-bench-") as tmp:
        args = ["train", "--dataset", "cifar10", "--backbone", "mobilenetv2", "--method", opts.method,
                "--image-size", str(size), "--batch-size", str(opts.batch_size), "--epochs", str(opts.epochs),
                "--eval-every", str(opts.epochs), "--train-per-class", str(opts.train_per_class),
                "--test-per-class", str(opts.test_per_class), "--device", "cpu", "--no-progress",
                "--output", str(Path(tmp) / "run")]
        load = os.getloadavg()[0]
        _, seconds, cpu_seconds = _lorsp(checkout, args)
        record = json.loads((Path(tmp) / "run" / "record.json").read_text())
    rows = record["metrics"]
    images, train_seconds = sum(r["train_images"] for r in rows), sum(r["train_seconds"] for r in rows)
    return {"images_per_s": images / train_seconds, "train_seconds": train_seconds,
            "epoch_seconds": sum(r["epoch_seconds"] for r in rows), "process_seconds": seconds,
            "process_cpu_seconds": cpu_seconds,
            "train_images": images, "epochs": len(rows), "test_images": rows[-1].get("test_images"),
            "git_commit": record.get("git_commit"), "lif_backend": record.get("lif_backend"),
            "loader": record.get("loader"), "loader_decode_seconds": record.get("loader_decode_seconds"),
            "loadavg_1min": [load, os.getloadavg()[0]]}


def build_gate(size: int, opts) -> dict:
    """Build (or find built) the compiled LIF gate of LoRSP's default configuration at ``size`` on this CPU,
    in a process of this checkout: then ``backend="auto"`` runs it in every later process of that shape."""
    code = ("import json, sys, time; from lorsp.prompters import build_prompter; "
            "from lorsp.prompters.fused import build_compiled_gate; "
            f"p = build_prompter({opts.method!r}, image_size={size}); shape = p.cpu_gate_shape(); "
            "t = time.perf_counter(); cached = build_compiled_gate(*shape) if shape else None; "
            "print(json.dumps({'shape': shape, 'was_built': cached, 'seconds': time.perf_counter() - t}))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_once(size: int, opts) -> dict:
    with tempfile.TemporaryDirectory(prefix="lorsp-step-bench-") as tmp:
        out = Path(tmp) / "bench.json"
        load = os.getloadavg()[0]
        _lorsp(ROOT, ["bench", "--methods", opts.method, "--backbones", "mobilenetv2", "--batch-size",
                      str(opts.batch_size), "--image-size", str(size), "--device", "cpu", "--steps", str(opts.steps),
                      "--warmup", "2", "--quiet", "--output", str(out)])
        row = json.loads(out.read_text())["rows"][0]
    return {"images_per_s": row["images_per_s"], "step_ms": row["step_ms"], "floor_ms": row["floor_ms"],
            "lif_backend": row.get("lif_backend"), "loadavg_1min": [load, os.getloadavg()[0]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="lorsp")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-per-class", type=int, default=160, help="CIFAR-10 train images per class")
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8, help="lorsp bench's timed steps")
    parser.add_argument("--warmup-runs", type=int, default=1, help="untimed runs of each trainer first")
    parser.add_argument("--before", default=None, help="a worktree of an older commit: its trainer, timed too")
    parser.add_argument("--output", default=None)
    opts = parser.parse_args()
    if not os.environ.get("LORSP_DATA"):
        parser.error("set LORSP_DATA to the data root with CIFAR-10 and the MobileNetV2 weights")
    sizes = [int(s) for s in opts.sizes.split(",")]
    kinds = {"train": lambda size: train_once(ROOT, size, opts), "step": lambda size: bench_once(size, opts)}
    if opts.before:
        kinds["train_before"] = lambda size: train_once(Path(opts.before).resolve(), size, opts)
    load_before = list(os.getloadavg())
    prepared = {size: {"gate": build_gate(size, opts)} for size in sizes}
    for size in sizes:
        prepared[size]["warmup"] = {kind: [kinds[kind](size) for _ in range(opts.warmup_runs)]
                                    for kind in kinds if kind != "step"}
    rounds = {size: {kind: [] for kind in kinds} for size in sizes}
    for r in range(opts.rounds):
        order = list(kinds) if r % 2 == 0 else list(kinds)[::-1]
        for size in sizes:
            for kind in order:
                rounds[size][kind].append(kinds[kind](size))
                row = rounds[size][kind][-1]
                print(f"round {r + 1} {size} px {kind}: {row['images_per_s']:.1f} images/s"
                      + (f", process {row['process_seconds']:.1f} s" if "process_seconds" in row else ""),
                      file=sys.stderr, flush=True)
                result = _result(rounds, prepared, opts, load_before, complete=False)
                if opts.output:  # what is measured so far, in case the run is cut short
                    Path(opts.output).write_text(json.dumps(result, indent=1) + "\n")
    result = _result(rounds, prepared, opts, load_before, complete=True)
    print(json.dumps(result["summary"], indent=1))
    if opts.output:
        Path(opts.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _paired(first, second, key: str = "images_per_s", invert: bool = False) -> float | None:
    """The median over rounds of ``first[key] / second[key]`` (``second / first`` with ``invert``)."""
    ratios = [(b[key] / a[key]) if invert else (a[key] / b[key]) for a, b in zip(first, second)]
    return statistics.median(ratios) if ratios else None


def _result(rounds, prepared, opts, load_before, complete: bool) -> dict:
    summary = []
    for size, per in rounds.items():
        row = {"image_size": size, "rounds_done": {k: len(v) for k, v in per.items()},
               **{f"{k}_images_per_s": statistics.median(x["images_per_s"] for x in v) if v else None
                  for k, v in per.items()},
               "train_over_step_paired": _paired(per["train"], per["step"])}
        if "train_before" in per:
            row["before_over_step_paired"] = _paired(per["train_before"], per["step"])
            row["after_over_before_paired"] = _paired(per["train"], per["train_before"])
            for kind in ("train", "train_before"):
                seconds = [x["process_seconds"] for x in per[kind]]
                row[f"{kind}_process_seconds"] = statistics.median(seconds) if seconds else None
            row["end_to_end_speedup_paired"] = _paired(per["train"], per["train_before"], "process_seconds",
                                                       invert=True)
            row["end_to_end_cpu_speedup_paired"] = _paired(per["train"], per["train_before"],
                                                           "process_cpu_seconds", invert=True)
        row["lif_backends"] = sorted({str(x.get("lif_backend")) for v in per.values() for x in v})
        summary.append(row)
    return {"meta": {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_before": load_before,
                     "loadavg_after": list(os.getloadavg()), "cpu_count": os.cpu_count(), "complete": complete,
                     "command": " ".join(sys.argv), "options": vars(opts)},
            "prepared": {str(k): v for k, v in prepared.items()},
            "summary": summary, "rounds": {str(k): v for k, v in rounds.items()}}


if __name__ == "__main__":
    raise SystemExit(main())
