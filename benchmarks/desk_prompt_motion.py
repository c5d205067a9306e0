"""How far the prompts move from their zero start in the first SGD steps at the paper's learning rate, or at a
larger prompt learning rate (``--prompt-lr``, issue 15).

Trains LoR-VP and LoRSP with the real trainer (``lorsp.train.train``: real MobileNetV2 weights, real CIFAR-10)
and, every ``--every`` steps, measures on a fixed batch of test images:

- ``mean_abs_prompt``: mean |δ(x)| in pixel units ([0, 1] images);
- ``relative_prompt``: that over the images' mean absolute deviation from their mean (how large δ is beside
  the image's own contrast);
- ``changed_predictions``: the share of those images whose predicted class changes when δ is removed (same
  head): how much the prompt does to the output.

The model is reached through the engine's ``lorsp.engine.building.compose_run_model`` (wrapped here to keep a
reference: a measurement hook, not part of the library). Usage::

    LORSP_DATA=/path/to/data python benchmarks/desk_prompt_motion.py --out benchmarks/cpu-desk-prompt-motion.json
    LORSP_DATA=/path/to/data python benchmarks/desk_prompt_motion.py --prompt-lr 0.1 \
        --out benchmarks/cpu-desk-prompt-motion-plr0.1.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="lorvp,lorsp")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--prompt-lr", type=float, default=None,
                        help="the prompt's own learning rate (TrainConfig.prompt_lr; default: --lr, the paper's)")
    parser.add_argument("--machine-note", default="", help="how loaded the machine was, for the record")
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/cpu-desk-prompt-motion.json")
    args = parser.parse_args()
    import torch
    from lorsp import train as engine
    from lorsp.data import build_dataset
    from lorsp.engine import building
    if args.threads:
        torch.set_num_threads(args.threads)
    probe = build_dataset("cifar10", split="test", image_size=args.image_size, per_class=12, seed=123)
    images = torch.stack([probe[i][0] for i in range(len(probe))])
    spread = float((images - images.mean(dim=(1, 2, 3), keepdim=True)).abs().mean())
    built = {}
    original = building.compose_run_model

    def capture(config, backbone, info, num_classes):
        model, info = original(config, backbone, info, num_classes)
        built["model"] = model
        return model, info

    building.compose_run_model = capture  # build_run_model composes through it
    rows = []
    for method in args.methods.split(","):
        kwargs = dict(groups=4, rank=4, tau=4.0, v_threshold=0.0) if method == "lorsp" else {}
        config = engine.TrainConfig(dataset="cifar10", method=method, epochs=args.epochs, batch_size=args.batch_size,
                                    lr=args.lr, prompt_lr=args.prompt_lr, schedule=args.schedule, image_size=args.image_size,
                                    train_per_class=args.train_per_class, test_per_class=10, device="cpu",
                                    prompter_kwargs=kwargs)
        counter = {"step": 0}
        t0 = time.perf_counter()

        def measure(epoch, step, loss):
            counter["step"] += 1
            if counter["step"] % args.every:
                return
            model = built["model"]
            was = model.training
            model.eval()
            with torch.no_grad():
                delta = model.prompter(images) - images
                with_prompt = model(images).argmax(1)
                prompter, model.prompter = model.prompter, None
                try:
                    without = model(images).argmax(1)
                finally:
                    model.prompter = prompter
            model.train(was)
            engine.freeze_backbone_mode(model)
            rows.append({"method": method, "step": counter["step"], "loss": loss,
                         "mean_abs_prompt": float(delta.abs().mean()),
                         "relative_prompt": float(delta.abs().mean()) / spread,
                         "changed_predictions": float((with_prompt != without).float().mean()),
                         "seconds": time.perf_counter() - t0, "load": os.getloadavg()[0]})
            print(rows[-1], flush=True)

        record = engine.train(config, progress=False, on_batch_end=measure)
        rows.append({"method": method, "final_accuracy": record["final_accuracy"], "steps": counter["step"],
                     "metrics": record["metrics"]})
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args),
            "probe_images": len(images), "image_mean_abs_deviation": spread,
            "machine": args.machine_note,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
