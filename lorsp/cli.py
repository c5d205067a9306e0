"""The ``lorsp`` command line: ``train``, ``eval``, ``params``, ``data import``, ``data list``, ``data fetch``,
``bench``.

``lorsp --help`` and ``lorsp COMMAND --help`` explain each command with examples; ``python -m lorsp``
is the same program. Out-of-range values are argparse errors naming the flag and the allowed range.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .cli_types import PROMPTER_FLAGS, add_config_arguments, config_values, int_range, key_value

__all__ = ["main", "build_parser", "config_from_args", "PROMPTER_FLAGS"]

EXIT_ERROR = 2
EXIT_DIVERGED = 3


# ---------------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------------
_MAIN_EPILOG = """examples:
  lorsp train --backbone mobilenetv2 --dataset cifar10 --method lorsp --groups 4 --rank 4 --output runs/c10
  lorsp train --dataset synthetic --method none --epochs 2 --image-size 32 --random-init --backbone resnet10t
  lorsp eval runs/c10 --dataset cifar10
  lorsp params --image-size 224 --groups 4 --rank 4
  lorsp data import ../shared/data && lorsp data list
  torchrun --nproc_per_node 2 -m lorsp train --dataset cifar10 --method lorsp --output runs/ddp
"""

_TRAIN_EPILOG = """examples:
  # the paper's protocol (SGD 0.9, lr 0.01, wd 1e-4, cosine per iteration, batch 256, 20 epochs, 224 px)
  lorsp train --backbone mobilenetv2 --dataset cifar10 --method lorsp --output runs/lorsp-c10
  # linear probing (features cached once), a small subset
  lorsp train --backbone mobilenetv2 --dataset cifar10 --method none --train-per-class 100 --epochs 5
  # LIF settings and a sparsifier ablation
  lorsp train --method lorsp --tau 2.0 --v-threshold 0.1 --groups 4 --rank 4 --output runs/tau2
  lorsp train --method topk --keep-ratio 0.2 --output runs/topk20
  # continue an interrupted run from its last complete checkpoint
  lorsp train --method lorsp --output runs/lorsp-c10 --resume
  # several GPUs (or CPU processes with gloo)
  torchrun --nproc_per_node 4 -m lorsp train --backbone vit_b32 --dataset cifar100 --output runs/ddp

The run directory (--output) receives checkpoint.pt (each epoch), record.json (the run record, with
final_accuracy and best_accuracy as fractions in [0, 1]) and prompt.safetensors (the trained prompt and
head). Exit status: 0 done, 2 bad arguments or data, 3 diverged (non-finite loss).
"""


# the --help sections of lorsp train: FieldSpec.group → title
_TRAIN_GROUPS = {"what": "what to train", "protocol": "protocol (defaults: the paper's)",
                 "data": "weights, data, device", "run": "run directory"}


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``lorsp train``: a flag for each :class:`~lorsp.engine.TrainConfig` field that has one
    (made from its FieldSpec, in field order within each section), then the flags that are not fields."""
    from .engine import TrainConfig
    groups = {key: p.add_argument_group(title) for key, title in _TRAIN_GROUPS.items()}
    add_config_arguments(groups, TrainConfig)
    groups["data"].add_argument("--backbone-option", dest="backbone_options", action="append", type=key_value,
                                default=[], metavar="KEY=VALUE",
                                help="extra timm create_model argument (repeatable), e.g. img_size=32")
    g = groups["run"]
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bars (default: bars when stderr is a terminal)")
    g.add_argument("--progress", dest="progress", action="store_true", help="progress bars even without a terminal")
    g.add_argument("--json", action="store_true", help="print the whole record as JSON at the end")
    _add_prompter_option_arguments(p)


def _add_prompter_option_arguments(p: argparse.ArgumentParser) -> None:
    """``lorsp train``: prompter options, passed to the prompter when given."""
    g = p.add_argument_group("prompter options (passed to the prompter when given)")
    for name, (kind, text) in PROMPTER_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=f"prompter_{name}", type=kind, default=None, help=text,
                       metavar=name.split("_")[-1].upper())
    g.add_argument("--detach-reset", dest="prompter_detach_reset", action="store_const", const=True, default=None,
                   help="cut the gradient through the LIF reset")
    g.add_argument("--prompter-option", dest="prompter_options", action="append", type=key_value, default=[],
                   metavar="KEY=VALUE", help="any other prompter keyword (repeatable), e.g. rescale=true")


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by lorsp train --output")
    p.add_argument("--dataset", default=None, help="evaluate on this dataset instead of the run's own "
                   "(e.g. an OOD set: imagenet-a, imagenet-r, imagenet-v2, imagenet-sketch)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--per-class", type=int_range(1, None), default=None, help="images per class (default all)")
    p.add_argument("--logit-subset", default=None, metavar="FILE",
                   help="JSON list of class indices to score over (default: the dataset's own subset, e.g. "
                   "ImageNet-A/R's 200 classes)")
    p.add_argument("--batch-size", type=int_range(1, 1 << 20), default=None, help="default: the run's")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None)
    p.add_argument("--output", default=None, metavar="FILE", help="also write the result as JSON here")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def _add_params_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", dest="methods", action="append", default=None,
                   help="method (repeatable; default: every registered prompter)")
    p.add_argument("--image-size", type=int_range(1, 4096), default=224)
    p.add_argument("--channels", type=int_range(1, 64), default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, (kind, text) in PROMPTER_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=f"prompter_{name}", type=kind, default=None, help=text,
                       metavar=name.split("_")[-1].upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorsp", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_MAIN_EPILOG,
        description="LoRSP: low-rank sparse visual prompting via a spiking neural network — train, evaluate, "
                    "count parameters, manage the local data root, benchmark.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"lorsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_run_parsers(sub)
    _add_data_parser(sub)
    _add_bench_parser(sub)
    _add_gpu_window_parser(sub)
    return parser


def _add_run_parsers(sub) -> None:
    """``lorsp train``, ``lorsp eval`` and ``lorsp params``."""
    p = sub.add_parser("train", help="train one run (prompt + head on a frozen backbone) and write its record",
                       description="Train a prompt and a linear head on a frozen backbone with the paper's "
                       "protocol, checkpoint each epoch, and write a JSON run record.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_TRAIN_EPILOG)
    _add_train_arguments(p)

    p = sub.add_parser("eval", help="evaluate a run directory's checkpoint on a dataset",
                       description="Evaluate the last checkpoint of a run on its dataset or another one (e.g. an "
                       "OOD set; ImageNet-A/R are scored over their 200 classes).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  lorsp eval runs/in1k-lorsp --dataset imagenet-a\n"
                              "  lorsp eval runs/c10 --per-class 10 --output c10-eval.json\n")
    _add_eval_arguments(p)

    p = sub.add_parser("params", help="closed-form trainable prompt parameter counts (Eqs. 13-15)",
                       description="Print the trainable prompt parameters of each method (Eqs. 13-15 for LoRSP).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  lorsp params --groups 4 --rank 4          # LoRSP: 6272 at 224 px\n"
                              "  lorsp params --method lorsp --method lorvp --rank 2 --groups 2\n")
    _add_params_arguments(p)


def _add_data_parser(sub) -> None:
    """``lorsp data`` and its actions (import, list, fetch, convert-tflite, verify, pack)."""
    p = sub.add_parser("data", help="the local data root: import archives, list what is there",
                       description="Manage the data root ($LORSP_DATA, default data/ in the checkout).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  lorsp data import ../shared/data\n  lorsp data list\n")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    q = data_sub.add_parser("import", help="fill the data root from local zips or folders (checks SHA256SUMS)",
                            description="Import local archives or folders into the data root.",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n  lorsp data import ../shared/data\n"
                                   "  lorsp data import cifar10-train.zip cifar10-test.zip --root /scratch/data\n")
    q.add_argument("paths", nargs="+", help="zip files, folders of zips, or dataset folders")
    q.add_argument("--root", default=None, help="data root (default: $LORSP_DATA or data/)")
    q = data_sub.add_parser("list", help="what is available locally and what would be downloaded",
                            description="List the datasets and weights found in the data root.",
                            epilog="example:\n  lorsp data list --root /scratch/data\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--root", default=None, help="data root (default: $LORSP_DATA or data/)")
    q = data_sub.add_parser("fetch", help="download what the smoke chapters need (CIFAR-10, MobileNetV2 weights)",
                            description="Fetch CIFAR-10 (torchvision) and MobileNetV2's ImageNet weights (timm) "
                                        "into the data root where they are missing and a network exists. "
                                        "LORSP_OFFLINE=1 or HF_HUB_OFFLINE=1: no network at all.",
                            epilog="example:\n  lorsp data fetch --root /scratch/data\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--root", default=None, help="data root (default: $LORSP_DATA or data/)")
    q = data_sub.add_parser("convert-tflite", help="rebuild the MobileNetV2 weights from Google's int8 TFLite file",
                            description="Convert mobilenet_v2_1.0_224_quant.tflite into the timm mobilenetv2_100 "
                                        "safetensors the experiments use (lorsp.data.tflite_mobilenetv2).",
                            epilog="example:\n  lorsp data convert-tflite mobilenet_v2_1.0_224_quant.tflite "
                                   "data/weights/mobilenetv2_100_tflite_in1k.safetensors\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("tflite", help="mobilenet_v2_1.0_224_quant.tflite (google-coral/test_data)")
    q.add_argument("output", help="the .safetensors file to write")
    q = data_sub.add_parser("verify", help="check a data root against the inputs of committed run records",
                            description="Rebuild the images of each run record from the data root and compare their "
                                        "fingerprints, and check the weights file or package by sha256 "
                                        "(lorsp.data.provenance). Exit status 1 when an input differs or is missing.",
                            epilog="example:\n  lorsp data verify results/desk --root /scratch/data\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("results", nargs="*", default=["results/desk"],
                   help="results folders or record files (default: results/desk)")
    q.add_argument("--root", default=None, help="data root (default: $LORSP_DATA or data/)")
    from .data.pack import add_pack_arguments
    add_pack_arguments(data_sub.add_parser(
        "pack", help="pack a data subset and the weights into <= 40 MiB (a data root for a GPU machine)",
        description="Write the GPU-window plan's images (native resolution, uint8) and the MobileNetV2 weights "
                    "into one folder with a manifest of sha256 sums (lorsp.data.pack).",
        epilog="example:\n  lorsp data pack .carry/window-pack\n",
        formatter_class=argparse.RawDescriptionHelpFormatter))


def _add_gpu_window_parser(sub) -> None:
    """``lorsp gpu-window``: the mini grid re-sized to a GPU window."""
    from . import gpu_window
    gpu_window.add_arguments(sub.add_parser(
        "gpu-window", help="the mini grid re-sized to a 10-minute GPU window: plan, run",
        description=gpu_window.__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lorsp gpu-window run --pack .carry/window-pack --minutes 9\n"
               "  lorsp gpu-window plan --costs-from benchmarks/cpu-window-costs-224.json --floor-images-per-s 4600\n"))


def _add_bench_parser(sub) -> None:
    description = "Time training steps of prompt methods against the backbone's floor (forward + input backward)."
    try:
        from . import bench
    except ImportError as error:
        p = sub.add_parser("bench", help="benchmark methods against the backbone floor (unavailable)",
                           description=f"{description} Unavailable in this installation: {error}")
        p.set_defaults(bench_unavailable=str(error))
        return
    p = sub.add_parser("bench", help="benchmark methods against the backbone floor",
                       description=getattr(bench, "DESCRIPTION", description),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=getattr(bench, "EPILOG", None))
    bench.add_arguments(p)


# ---------------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------------
def _prompter_kwargs(args) -> dict:
    kwargs = {k[len("prompter_"):]: v for k, v in vars(args).items()
              if k.startswith("prompter_") and k != "prompter_options" and v is not None}
    for key, value in getattr(args, "prompter_options", []) or []:
        kwargs[key] = value
    return kwargs


def config_from_args(args):
    """A :class:`lorsp.train.TrainConfig` from parsed ``lorsp train`` arguments: the fields that have a flag
    (:func:`~lorsp.cli_types.config_values`), the prompter and backbone options, and a fresh run directory
    under runs/ when --output is not given."""
    from .engine import TrainConfig
    output = args.output
    if output is None:
        from .distributed import env_world_size
        if env_world_size() > 1:
            raise ValueError("under torchrun give --output DIR (all processes must share one run directory)")
        if args.resume:
            raise ValueError("--resume needs --output DIR, the run directory to continue")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        output = str(Path("runs") / f"{args.backbone}_{args.dataset.replace(':', '-').replace('/', '-')}_"
                                    f"{args.method}_s{args.seed}_{stamp}")
    values = {**config_values(args, TrainConfig), "output": output}
    return TrainConfig(**values, prompter_kwargs=_prompter_kwargs(args),
                       backbone_kwargs=dict(args.backbone_options))


def _cmd_train(args) -> int:
    from .engine import DivergenceError, train
    config = config_from_args(args)
    try:
        record = train(config, progress=args.progress)
    except DivergenceError as error:
        print(f"lorsp train: diverged: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    from .distributed import env_world_size
    if int(os.environ.get("RANK", "0")) != 0 and env_world_size() > 1:
        return 0
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        firing = record.get("firing_rate")
        sparsity = record.get("sparsity")
        print(f"{config.method} on {config.backbone}/{config.dataset}: final accuracy "
              f"{record['final_accuracy']:.4f}, best {record['best_accuracy']:.4f} "
              f"({record['epochs_completed']} epochs, {record['timings']['total_seconds']:.1f} s"
              + (f", firing rate {firing:.3f}" if firing is not None else "")
              + (f", prompt sparsity {sparsity:.3f}" if sparsity is not None else "") + ")")
        if record.get("random_weights"):
            print("note: the backbone had RANDOM weights (--random-init); the numbers say nothing about the paper")
        print(f"record: {record.get('record_path')}")
    return 0


def _cmd_eval(args) -> int:
    from .engine import evaluate_run
    subset = None
    if args.logit_subset:
        try:
            subset = json.loads(Path(args.logit_subset).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--logit-subset {args.logit_subset}: expected a JSON list of class indices ({error})")
        if not isinstance(subset, list) or not all(isinstance(i, int) for i in subset):
            raise ValueError(f"--logit-subset {args.logit_subset}: expected a JSON list of integers")
    result = evaluate_run(args.run_dir, dataset=args.dataset, split=args.split, per_class=args.per_class,
                          device=args.device, batch_size=args.batch_size, logit_indices=subset,
                          data_root=args.data_root, progress=args.progress)
    text = json.dumps(result, indent=2)
    if args.output:
        from .checkpoint import atomic_write_bytes
        atomic_write_bytes(args.output, text.encode())
    print(text)
    return 0


def _cmd_params(args) -> int:
    from .prompters import list_prompters, prompt_param_count
    methods = args.methods or list_prompters()
    kwargs = _prompter_kwargs(args)
    rows = []
    for method in methods:
        if method == "none":
            rows.append({"method": method, "params": 0, "note": "linear probing: no prompt"})
            continue
        try:
            count = prompt_param_count(method, image_size=args.image_size, channels=args.channels, **kwargs)
            rows.append({"method": method, "params": int(count), "note": ""})
        except (TypeError, ValueError) as error:
            if args.methods:  # asked for explicitly: the error is the answer
                raise ValueError(f"params of {method!r}: {error}") from error
            rows.append({"method": method, "params": None, "note": str(error)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    options = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
    print(f"trainable prompt parameters at {args.image_size}x{args.image_size}, {args.channels} channels "
          f"({options}):")
    width = max(len(r["method"]) for r in rows) if rows else 6
    for r in rows:
        value = f"{r['params']:>10,}" if r["params"] is not None else f"{'n/a':>10}"
        print(f"  {r['method']:<{width}}  {value}  {r['note']}".rstrip())
    return 0


def _print_result(result) -> None:
    if result is None:
        return
    if isinstance(result, str):
        print(result)
    elif isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        _print_table(result)
    else:
        try:
            print(json.dumps(result, indent=2, default=str, ensure_ascii=False))
        except TypeError:
            print(result)


def _print_table(rows: list[dict]) -> None:
    """Rows of dicts as an aligned text table (columns in first-seen order; None shown as '-')."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _cmd_data(args) -> int:
    from . import data
    if args.data_command == "import":
        _print_result(data.import_data(args.paths, root=args.root))
    elif args.data_command == "fetch":
        from .data.fetch import ensure_smoke_inputs
        _print_result([r.to_dict() for r in ensure_smoke_inputs(args.root).results])
    elif args.data_command == "convert-tflite":
        from .data.tflite_mobilenetv2 import convert_tflite_mobilenetv2
        from .data.importer import sha256_of
        out = convert_tflite_mobilenetv2(args.tflite, args.output)
        print(f"wrote {out} (sha256 {sha256_of(out)})")
    elif args.data_command == "verify":
        return _verify_data(args)
    elif args.data_command == "pack":
        from .data.pack import pack_main
        return pack_main(args)
    else:
        _print_result(data.describe_data(root=args.root))
    return 0


def _verify_data(args) -> int:
    """``lorsp data verify``: one line per record and input, then the counts; 1 when anything is not "ok"."""
    from collections import Counter

    from .data.provenance import verify_records
    files = []
    for given in args.results:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (expected a results folder or a record.json)")
        files.extend(sorted(path.glob("*/record.json")) if path.is_dir() else [path])
    if not files:
        raise FileNotFoundError(f"no */record.json under {', '.join(args.results)}")
    rows = verify_records(files, args.root)
    for row in rows:
        print(f"{row['status']:<10} {row['input']:<13} {row['record']}  {row['note']}")
    counts = Counter(row["status"] for row in rows)
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + f" ({len(files)} records)")
    return 0 if set(counts) <= {"ok"} else 1


def _cmd_bench(args) -> int:
    if getattr(args, "bench_unavailable", None):
        raise RuntimeError(f"lorsp bench is unavailable: {args.bench_unavailable}")
    from . import bench
    result = bench.main(args)
    return result if isinstance(result, int) else 0


def _cmd_gpu_window(args) -> int:
    from . import gpu_window
    return gpu_window.main(args)


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "params": _cmd_params, "data": _cmd_data, "bench": _cmd_bench,
            "gpu-window": _cmd_gpu_window}


def main(argv=None) -> int:
    """Entry point of ``lorsp`` and ``python -m lorsp``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError, TypeError) as error:  # OSError: bad image files too
        if os.environ.get("LORSP_DEBUG"):
            raise
        print(f"lorsp {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
