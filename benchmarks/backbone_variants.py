"""The frozen MobileNetV2's floor (forward + backward to the input) in the variants issue 17 asks about, against
timm's default-padded ``mobilenetv2_100``, all in one process, in alternating rounds.

    python benchmarks/backbone_variants.py --sizes 64,128 --batch-size 64 --rounds 10 \\
        --output benchmarks/cpu-backbone-variants.json

Variants (``--variants``):

- ``timm-default``: ``timm.create_model("mobilenetv2_100")``, symmetric padding (the reference floor);
- ``same``: the offline backbone as it was built before (TensorFlow-style "same" padding, timm's
  ``Conv2dSame`` computing its padding on every call, separate batch norms);
- ``same-static``: "same" padding fixed for the input size (:func:`lorsp.backbones.static_same_padding`);
- ``same-folded``: that, and the batch norms folded into the convolutions
  (:func:`lorsp.backbones.fold_frozen_backbone` with ``channels_last=False``);
- ``same-folded-cl``: the same in channels-last memory format (``fold_frozen_backbone``'s default: what the
  trainer and ``lorsp bench`` now run);
- ``timm-default-folded``: timm's default-padded model with the batch norms folded;
- ``timm-default-cl``: timm's default-padded model, unfolded, channels-last.

The weights are random with batch-norm statistics drawn away from 0/1 (timing does not depend on them; the
outputs are compared against ``same``'s). One round times one step of every variant, in an order that reverses
every round; the record keeps every step, the medians and the per-round ratios to ``timm-default``
(median and a distribution-free 95% interval, :func:`lorsp.bench.median_ci`).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorsp.backbones import fold_frozen_backbone, static_same_padding  # noqa: E402
from lorsp.bench import median_ci  # noqa: E402

VARIANTS = ("timm-default", "same", "same-static", "same-folded", "same-folded-cl", "timm-default-folded",
            "timm-default-cl")


def _base(pad_type: str):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_100", pad_type=pad_type, num_classes=0).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.2, 0.2)
    return model.requires_grad_(False)


def build(variant: str, size: int):
    model = _base("same" if variant.startswith("same") else "")
    if variant == "timm-default-cl":
        model = model.to(memory_format=torch.channels_last)
    if variant == "same-static":
        static_same_padding(model, size)
    elif "folded" in variant:
        fold_frozen_backbone(model, size, channels_last=variant.endswith("-cl"))
    return model


def floor_step(model, x, channels_last: bool) -> None:
    x = x.detach().clone().requires_grad_()  # folded variants turn it channels-last themselves (a pre-hook)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()


def run(size: int, batch: int, rounds: int, warmup: int, variants, clock=time.perf_counter) -> dict:
    x = torch.rand(batch, 3, size, size)
    models = {v: build(v, size) for v in variants}
    reference = _base("same")
    with torch.no_grad():
        ref = reference(x[:4])
        errors = {v: float((m(x[:4]) - ref).abs().max() / ref.abs().max())
                  for v, m in models.items() if v.startswith("same")}
    times = {v: [] for v in variants}
    for r in range(warmup + rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            start = clock()
            floor_step(models[v], x, v == "timm-default-cl")
            if r >= warmup:
                times[v].append((clock() - start) * 1e3)
    base = "timm-default" if "timm-default" in variants else variants[0]
    rows = []
    for v in variants:
        ratios = [a / b for a, b in zip(times[v], times[base])]
        interval = median_ci(ratios)
        rows.append({"variant": v, "image_size": size, "batch_size": batch, "median_ms": statistics.median(times[v]),
                     f"ratio_to_{base}_paired": statistics.median(ratios),
                     f"ratio_to_{base}_paired_ci95": list(interval) if interval else None,
                     "max_rel_error_vs_same": errors.get(v), "round_ms": [round(t, 3) for t in times[v]]})
    return {"rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: time.perf_counter; cpu: the process's CPU time (time.process_time), which a "
                             "machine shared with other work disturbs far less (with --threads 1: the work itself)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    load_before = list(os.getloadavg())
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows += run(size, args.batch_size, args.rounds, args.warmup, variants, clock)["rows"]
        for row in rows[-len(variants):]:
            print(f"{size:4d} px {row['variant']:20s} {row['median_ms']:8.1f} ms  "
                  f"×timm-default {row.get('ratio_to_timm-default_paired', float('nan')):.3f}", flush=True)
    import timm
    meta = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
            "timm": timm.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": list(os.getloadavg()), "command": " ".join(sys.argv),
            "clock": args.clock}
    if args.output:
        Path(args.output).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
