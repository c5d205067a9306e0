"""The pilot that chooses the second desk protocol (issue 25): each prompted method briefly trained on each backbone
at each prompt learning rate, with the real trainer, weights and data.

For every (backbone, method, prompt lr) it trains one run (``lorsp.train.train``; the head at the paper's 0.01, the
prompt at ``prompt lr`` through ``TrainConfig.prompt_lr``; a validation split of ``--val-per-class`` training images
per class, ``TrainConfig.val_per_class``) and records:

- ``val_accuracy`` (the lr search's criterion; never the test set) and ``test_accuracy`` (on a few test images,
  recorded only, not used to choose);
- prompt motion: on a fixed probe of training images (a seeded draw of its own), ``mean_abs_delta`` = mean
  |P_final(x) − P_init(x)| in pixel units ([0, 1] images), where P is the prompter (the image the backbone sees)
  at the end and at its initialisation; ``relative_to_std`` = that over the probe's pixel std (the std of the
  input: a per-channel affine normalisation changes both alike, up to the channels' scales), and
  ``changed_predictions`` = the share of probe images whose predicted class changes when P_final is replaced by
  P_init (same head);
- ``last_epoch_share``: the last epoch's share of the training loss's drop (``lorsp.experiments.evidence.flattening``;
  flattened when under 20%), with every epoch's mean training loss;
- ``seconds``: the run's wall time, with the load average before and after (the machine is shared).

The record is rewritten after every run (``"complete": false`` until the last), so a pilot cut short still leaves
what it measured. Usage::

    LORSP_DATA=/path/to/data-root nohup python benchmarks/desk_pilot.py --out benchmarks/cpu-desk-pilot.json &
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

METHODS = ("LoR-VP", "LoRSP", "EVP", "AutoVP", "ILM-VP", "LPF")


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="mobilenetv2,efficientnet_lite0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--prompt-lrs", default="0.01,0.03", help="the prompt's learning rates (0.01: the paper's)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=128)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01, help="the head's learning rate (the paper's)")
    parser.add_argument("--probe-per-class", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--machine-note", default="", help="how loaded the machine was, for the record")
    parser.add_argument("--out", default="benchmarks/cpu-desk-pilot.json")
    parser.add_argument("--summary", action="store_true", help="print --out as a Markdown table and exit")
    parser.add_argument("--resume", action="store_true", help="keep the rows of --out (same arguments) and run the rest")
    return parser.parse_args()


def _probe(args):
    """A fixed batch of training images (seed 999, not the runs' seed) for the motion measurement."""
    import torch
    from lorsp.data import build_dataset
    probe = build_dataset(args.dataset, split="train", image_size=args.image_size, per_class=args.probe_per_class,
                          seed=999)
    return torch.stack([probe[i][0] for i in range(len(probe))])


def _motion(model, initial_prompter, images) -> dict:
    """How far the prompter moved from its initialisation, on ``images`` (see the module docstring)."""
    import torch
    from lorsp import train as engine
    was = model.training
    model.eval()
    with torch.no_grad():
        moved = model.prompter(images) - initial_prompter.eval()(images)
        final_pred = model(images).argmax(1)
        prompter, model.prompter = model.prompter, initial_prompter
        try:
            initial_pred = model(images).argmax(1)
        finally:
            model.prompter = prompter
    model.train(was)
    engine.freeze_backbone_mode(model)
    mean_abs = float(moved.abs().mean())
    std = float(images.std())
    return {"mean_abs_delta": mean_abs, "input_std": std, "relative_to_std": mean_abs / std,
            "changed_predictions": float((final_pred != initial_pred).float().mean())}


def _last_epoch_share(label: str, dataset: str, metrics: list) -> tuple[float, str]:
    import pandas as pd
    from lorsp.experiments.evidence import flattening
    curves = pd.DataFrame([{"label": label, "dataset": dataset, "epoch": m["epoch"], "train_loss": m["train_loss"]}
                           for m in metrics])
    row = flattening(curves).iloc[0]
    return float(row["last epoch's share of the drop"]), str(row["flattened"])


def _one_run(args, engine, built, images, backbone: str, label: str, prompt_lr: float) -> dict:
    from lorsp.experiments.methods import method_config
    settings = method_config(label, args.image_size)
    method, head = settings.pop("method"), settings.pop("head")
    config = engine.TrainConfig(
        backbone=backbone, dataset=args.dataset, method=method, head=head, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, prompt_lr=prompt_lr, image_size=args.image_size,
        train_per_class=args.train_per_class, val_per_class=args.val_per_class,
        test_per_class=args.test_per_class, eval_every=args.epochs, device="cpu", prompter_kwargs=settings)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    record = engine.train(config, progress=False)
    seconds = time.perf_counter() - t0
    share, flattened = _last_epoch_share(label, args.dataset, record["metrics"])
    row = {"backbone": backbone, "label": label, "prompt_lr": prompt_lr, "head_lr": args.lr,
           "val_accuracy": record.get("final_val_accuracy"), "test_accuracy": record.get("final_accuracy"),
           "train_loss_per_epoch": [m["train_loss"] for m in record["metrics"]],
           "last_epoch_share": share, "flattened": flattened,
           "seconds": seconds, "steps": record.get("steps_completed"), "n_train": record["data"]["n_train"],
           "n_val": record["data"].get("n_val"), "seconds_per_train_image_epoch":
               seconds / (record["data"]["n_train"] * args.epochs),
           "load_before": load0, "load_after": os.getloadavg()[0], "lif_backend": record.get("lif_backend")}
    row.update(_motion(built["model"], built["initial_prompter"], images))
    return row


def summary(path) -> str:
    """The pilot record at ``path`` as the Markdown table of book/running.md."""
    data = json.loads(Path(path).read_text())
    lines = ["| backbone | method | prompt lr | val acc | mean \\|δ\\| / input std | predictions changed | "
             "last epoch's share of the loss drop | seconds | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        if "failed" in r:
            lines.append(f"| {r['backbone']} | {r['label']} | {r['prompt_lr']:g} | failed: {r['failed']} |||||")
            continue
        lines.append(f"| {r['backbone']} | {r['label']} | {r['prompt_lr']:g} | {r['val_accuracy']:.2f} | "
                     f"{r['relative_to_std']:.2%} | {r['changed_predictions']:.0%} | {r['last_epoch_share']:.0%} | "
                     f"{r['seconds']:.0f} | {r['load_before']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    args = _arguments()
    if args.summary:
        print(summary(args.out))
        return 0
    import torch
    from lorsp import train as engine
    from lorsp.engine import building
    torch.set_num_threads(args.threads)
    images = _probe(args)
    built = {}
    original = building.compose_run_model

    def capture(config, backbone, info, num_classes):  # a measurement hook on the trainer, not part of the library
        model, info = original(config, backbone, info, num_classes)
        built["model"], built["initial_prompter"] = model, copy.deepcopy(model.prompter)
        return model, info

    building.compose_run_model = capture  # build_run_model composes through it
    lrs = [float(v) for v in args.prompt_lrs.split(",")]
    # every method at the first lr (both backbones) before any at the next: a pilot cut short still covers them all
    plan = [(m, b, lr) for lr in lrs for m in args.methods.split(",") for b in args.backbones.split(",")]
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "args": vars(args), "probe_images": len(images), "machine": args.machine_note,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "planned_runs": len(plan)}
    rows = []
    if args.resume and Path(args.out).is_file():  # keep the runs of an earlier, interrupted pilot of the same args
        earlier = json.loads(Path(args.out).read_text())
        same = {k: v for k, v in earlier["meta"]["args"].items() if k not in ("prompt_lrs", "resume", "machine_note")}
        if same != {k: v for k, v in vars(args).items() if k not in ("prompt_lrs", "resume", "machine_note")}:
            raise SystemExit(f"{args.out} was written with other arguments: {earlier['meta']['args']}")
        rows = [r for r in earlier["rows"] if "failed" not in r]
        meta["resumed_rows"] = len(rows)
    done = {(r["label"], r["backbone"], r["prompt_lr"]) for r in rows}
    for label, backbone, lr in [p for p in plan if p not in done]:
        try:
            rows.append(_one_run(args, engine, built, images, backbone, label, lr))
        except Exception as error:  # a failed run is recorded, never dropped
            rows.append({"backbone": backbone, "label": label, "prompt_lr": lr, "failed": f"{type(error).__name__}: "
                                                                                           f"{error}"})
        print(json.dumps(rows[-1]), flush=True)
        meta.update(complete=all(p in {(r["label"], r["backbone"], r["prompt_lr"]) for r in rows} for p in plan),
                    runs_done=len(rows),
                    updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
