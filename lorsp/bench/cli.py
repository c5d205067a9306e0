"""``lorsp bench``'s command line: its options (:func:`add_arguments`) and :func:`main`."""
from __future__ import annotations

import argparse
import os
import sys

from .configs import DEFAULT_METHODS
from .measure import DTYPES, parse_ints
from .report import format_table, write_json
from .run import bench_meta, run_bench

DESCRIPTION = ("Time training steps of prompt methods against the backbone's floor (its forward plus the "
               "backward to the input), interleaved in one process, and print the ratios method/floor and "
               "LoRSP/LoR-VP.")
EPILOG = """examples:
  lorsp bench --methods lorsp-reference,lorsp,lorsp-compiled,lorvp,lp,lp-cached --backbones mobilenetv2 \\
      --batch-size 32 --image-size 128 --device cpu --output benchmarks/cpu-mobilenetv2-128.json
  lorsp bench --methods lorsp,lorsp-fused,lorvp --backbones vit_b32 --batch-size 256 --image-size 224 \\
      --device cuda --dtype bfloat16 --random-init --output benchmarks/gpu-vit_b32-224.json
  lorsp bench --pipeline cifar10 --batch-size 256 --image-size 224 --device cuda
"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``lorsp bench`` options."""
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated methods: registered prompters (lorsp = its default backend), "
                             "lorsp-reference, lorsp-fused (eager), lorsp-compiled, lp, lp-cached "
                             "(default: %(default)s)")
    parser.add_argument("--backbones", default="mobilenetv2",
                        help="comma-separated backbones (short names or timm names; default: %(default)s)")
    parser.add_argument("--batch-size", default="32", help="batch size(s), comma-separated (default: %(default)s)")
    parser.add_argument("--image-size", default="128", help="image size(s), comma-separated (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="autocast dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: %(default)s)")
    parser.add_argument("--run-steps", type=int, default=None, metavar="N",
                        help="tell the prompters the run takes N training steps (default: warmup + steps); on a "
                             "CPU LoRSP's default backend compiles for runs of at least "
                             "lorsp.prompters.fused.CPU_COMPILE_MIN_STEPS steps")
    parser.add_argument("--random-init", action="store_true",
                        help="random backbone weights (timing does not depend on the weights)")
    parser.add_argument("--data-root", default=None, help="data root for local weights / datasets")
    parser.add_argument("--output", default=None, help="write the rows as JSON to this file")
    parser.add_argument("--pipeline", default=None, metavar="DATASET",
                        help="instead: compare the on-device input pipeline with the DataLoader on DATASET")
    parser.add_argument("--pipeline-images", type=int, default=512,
                        help="images for --pipeline (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for --pipeline")
    parser.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    return parser


def main(args) -> int:
    """Run ``lorsp bench`` from parsed arguments; prints the table, writes ``--output``."""
    if getattr(args, "pipeline", None):
        from ..data.gpu_pipeline import bench_pipeline

        result = bench_pipeline(args.pipeline, batch_size=parse_ints(args.batch_size)[0],
                                image_size=parse_ints(args.image_size)[0], device=args.device,
                                max_images=args.pipeline_images, num_workers=args.workers, root=args.data_root)
        print(f"{result['dataset']} ({result['images']} images, batch {result['batch_size']}, "
              f"{result['image_size']} px, {result['device']}): DataLoader with {result['num_workers']} workers "
              f"{result['dataloader_images_per_s']:,.0f} images/s, decode-once pipeline "
              f"{result['device_pipeline_images_per_s']:,.0f} images/s ({result['speedup']:.1f}×); decoding once "
              f"took {result['decode_s']:.2f} s, {result['bank_mb']:.1f} MB of uint8")
        if args.output:
            print(f"wrote {write_json([result], args.output, bench_meta(args.device))}")
        return 0
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rows = run_bench(args.methods, args.backbones, args.batch_size, args.image_size, args.device, args.steps,
                     args.warmup, args.random_init, dtype=args.dtype, data_root=args.data_root,
                     progress=not args.quiet, run_steps=args.run_steps)
    meta = bench_meta(args.device)
    meta["loadavg_after"] = meta.pop("loadavg_before", None)
    meta["loadavg_before"] = load_before
    meta["command"] = "lorsp bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "lorsp bench"
    print(f"device: {meta['gpu'] or meta['cpu']} ({meta['cpu_count']} cores), torch {meta['torch']}")
    print(format_table(rows))
    if args.output:
        path = write_json(rows, args.output, meta)
        print(f"wrote {path}")
    return 0
