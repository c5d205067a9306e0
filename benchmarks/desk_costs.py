"""Measure what one image costs the real trainer on this CPU, to size the ``desk`` scale (issue 15).

The machine this was written on is shared by several sessions (load average 8–12 on 2 cores), so wall-clock
times mean little. Everything here runs on ONE torch thread and is timed in **CPU seconds of this process**
(``time.process_time``), which count only while the process runs, and every cost is also written as a
multiple of the backbone *floor* measured in the same round (alternating sizes and methods, so that what
the load does to the CPU's speed falls on all of them alike):

- ``floor``: the frozen MobileNetV2 (weights of the data root), forward + backward to the input of 64 random
  images (what ``lorsp bench`` calls the floor);
- ``forward``: its forward without autograd (what evaluation and LP's feature cache cost per image);
- ``decode``: reading, decoding and resizing one CIFAR-10 image through the trainer's dataset;
- ``step:<method>``: one optimisation step of the real trainer (``lorsp.train.train``, real CIFAR-10, batch
  ``--batch-size``) per image, from the CPU clock at each step's end (the first step of a run is left out).

``lorsp.desk_budget`` turns the multiples of the floor into hours on an unloaded 2-core machine with the
floor of the quietest committed ``lorsp bench`` record. Usage::

    LORSP_DATA=/path/to/data python benchmarks/desk_costs.py --out benchmarks/cpu-desk-costs.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

_BACKBONE = {}


def _backbone():
    if "model" not in _BACKBONE:
        from lorsp.backbones import create_backbone
        model, _ = create_backbone("mobilenetv2")
        _BACKBONE["model"] = model.eval()
    return _BACKBONE["model"]


def floor_and_forward(size: int, batch: int, repeats: int) -> tuple[float, float]:
    """CPU seconds per image: forward + input backward, and forward without autograd (medians)."""
    import torch
    model = _backbone()
    x = torch.rand(batch, 3, size, size)
    floor, forward = [], []
    for _ in range(repeats + 1):
        xi = x.clone().requires_grad_(True)
        c0 = time.process_time()
        model(xi).sum().backward()
        floor.append(time.process_time() - c0)
        with torch.no_grad():
            c0 = time.process_time()
            model(x)
            forward.append(time.process_time() - c0)
    return statistics.median(floor[1:]) / batch, statistics.median(forward[1:]) / batch


def decode_seconds(size: int, n: int) -> float:
    from lorsp.data import build_dataset
    data = build_dataset("cifar10", split="train", image_size=size, per_class=max(1, n // 10), seed=7)
    c0 = time.process_time()
    for i in range(len(data)):
        data[i]
    return (time.process_time() - c0) / len(data)


def step_seconds(method: str, size: int, train_per_class: int, batch: int) -> float:
    """Median CPU seconds per image of the real trainer's optimisation steps (first step left out)."""
    from lorsp.train import TrainConfig, train
    kwargs = dict(groups=4, rank=4, tau=4.0, v_threshold=0.0) if method == "lorsp" else {}
    head = "linear"
    if method == "ilm":
        method, head = "pad", "ilm"
        kwargs = dict(inner_size=max(1, round(32 * size / 224)), squash="sigmoid")
    clocks = []
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(dataset="cifar10", method=method, head=head, epochs=1, batch_size=batch,
                             image_size=size, train_per_class=train_per_class, test_per_class=1, device="cpu",
                             prompter_kwargs=kwargs, output=folder, cache_features="off")
        train(config, progress=False, on_batch_end=lambda epoch, step, loss: clocks.append(time.process_time()))
    steps = [b - a for a, b in zip(clocks, clocks[1:])]
    return statistics.median(steps) / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,96,128")
    parser.add_argument("--methods", default="lorvp,lorsp")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-per-class", type=int, default=26, help="images per class of each trainer run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--with-224", action="store_true", help="also the forward at 224 px (LP's cached reference)")
    parser.add_argument("--out", default="benchmarks/cpu-desk-costs.json")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []

    def add(**row):
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(row, flush=True)

    for round_index in range(args.rounds):
        for size in sizes + ([224] if args.with_224 else []):
            floor, forward = floor_and_forward(size, args.batch_size, repeats=3)
            add(round=round_index, image_size=size, what="floor", cpu_seconds_per_image=floor, x_floor=1.0)
            add(round=round_index, image_size=size, what="forward", cpu_seconds_per_image=forward,
                x_floor=forward / floor)
            decode = decode_seconds(size, 100)
            add(round=round_index, image_size=size, what="decode", cpu_seconds_per_image=decode,
                x_floor=decode / floor)
            if size == 224:
                continue
            for method in args.methods.split(","):
                step = step_seconds(method, size, args.train_per_class, args.batch_size)
                add(round=round_index, image_size=size, what=f"step:{method}", cpu_seconds_per_image=step,
                    x_floor=step / floor)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "clock": "time.process_time (CPU seconds of this process)",
            "machine": "shared by six concurrent sessions (load average in rows)",
            "args": vars(args), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
