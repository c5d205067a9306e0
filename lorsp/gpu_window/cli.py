"""The command line: ``lorsp gpu-window {plan,costs,run}`` (:func:`add_arguments`, :func:`main`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .costs import costs_from_bench, format_plan, measure_costs, plan_table
from .plan import WINDOW_SCALE, plan_backbones, window_plan
from ..experiments.store import RecordStore
from .run import run_window


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
        print(plan_backbones(plan))
        done = set()
        if args.results:
            store = RecordStore(args.results)
            done = {i["key"] for i in plan if store.is_final(i["key"])}
        rows, per_block = plan_table(plan, costs, done)
        print(format_plan(rows, per_block, markdown=args.markdown))
        return 0
    if args.window_command == "costs":
        from ..bench import bench_meta, format_table, write_json
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
